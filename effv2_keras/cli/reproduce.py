"""`effv2 reproduce EXPERIMENT [--quick] [--data DATA] [--out results]`: one experiment of the paper or
of the seed reports, resumable; `effv2 reproduce --list` names them.

Writes OUT/EXPERIMENT/{results.json, table.md, accuracy_vs_time.png}; run it again to continue where
it stopped (finished candidates are kept, an interrupted trainer resumes from its checkpoint). The
experiments are ``effv2_keras.experiments``; this command parses flags and prints.

Example:
    effv2 reproduce classical_baselines --quick --data folder:../shared/data/signdigits100
"""

from __future__ import annotations

from absl import flags

from effv2_keras.cli import common

COMMAND = "reproduce"
FLAGS = flags.FlagValues()
flags.DEFINE_bool("list", False, "List the experiments and exit.", flag_values=FLAGS)
flags.DEFINE_bool("quick", False, "Small settings that finish in minutes (../shared/data-sized data sets).",
                  flag_values=FLAGS)
flags.DEFINE_string("data", None, "Data spec (folder:PATH, tfds:NAME[:CONFIG], digits); default: the "
                    "experiment's own (the seed report's data set, through TFDS, never downloaded).", flag_values=FLAGS)
flags.DEFINE_string("out", "results", "Results root: OUT/EXPERIMENT/ holds the table, JSON and plots.",
                    flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of every candidate.", flag_values=FLAGS)

parse = common.make_parser(FLAGS, "usage: effv2 reproduce EXPERIMENT [--quick] [--data DATA] [--out results]\n"
                                  "       effv2 reproduce --list")


def _reproduce(argv) -> int:
    from effv2_keras import experiments
    from effv2_keras.experiments.runner import Options, ReproduceError, reproduce

    if FLAGS.list:
        for name, summary in experiments.list_experiments():
            print(f"{name:<22} {summary}")
        return 0
    if len(argv) != 2:
        raise common.UsageError("give one EXPERIMENT (effv2 reproduce --list names them).")
    try:
        report = reproduce(argv[1], Options(quick=FLAGS.quick, data=FLAGS.data, out=FLAGS.out, seed=FLAGS.seed))
    except ReproduceError as error:
        raise common.UsageError(str(error)) from None
    print((report.folder / "table.md").read_text())
    print(f"wrote {report.folder}/results.json, table.md, accuracy_vs_time.png")
    if report.failed:
        return common.fail(COMMAND, f"{len(report.failed)} candidate(s) failed: {', '.join(report.failed)} "
                                    "(reasons in the table); run the command again to retry them.")
    return 0


main = common.guarded(COMMAND, FLAGS, _reproduce)


def run(argv=None) -> None:
    """Entry point of `effv2 reproduce` and tools/reproduce.py."""
    common.run(main, parse, argv)


if __name__ == "__main__":
    run()
