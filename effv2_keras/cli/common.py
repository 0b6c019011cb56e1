"""What every `effv2` command shares: its flag parser, its one error path, quiet logs and
path checks. Standard library and absl only, so importing it loads no TensorFlow.

Exit codes: 0 done; 1 the inputs failed (a model that does not load, images that do not
decode, a verification that misses its tolerance); 2 the command line is wrong (unknown
or missing flags, stray arguments, a path that does not exist). Every error is one line,
``effv2 <command>: error: ...``, naming flags where the library names Python arguments:

    >>> from absl import flags
    >>> values = flags.FlagValues()
    >>> flags.DEFINE_string("model", None, "Model.", flag_values=values)  # doctest: +ELLIPSIS
    <absl.flags._flagvalues.FlagHolder object at ...>
    >>> values(["prog"]) and None
    >>> flag_name("model", values), flag_name("class_names", values)
    ('--model', 'class_names')
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Dict, List

from absl import app, flags

HELP_ARGS = ("-h", "--help", "-help", "--helpfull", "--helpshort")
USAGE, FAILED = 2, 1
# TF's C++ log level when the user set none (3: errors and banners hidden).
QUIET_TF_LOG_LEVEL = "3"
VERBOSE_ENV = "EFFV2_TF_LOG"


class UsageError(Exception):
    """The command line itself is wrong (exit 2)."""


def make_parser(flag_values: flags.FlagValues, usage: str):
    """An absl ``flags_parser`` for a command whose flags live in ``flag_values``."""

    def parse(argv):
        argv = list(argv)
        if any(arg in HELP_ARGS for arg in argv[1:]):
            print(f"{usage}\n\nflags:\n{flag_values.get_help()}")
            sys.exit(0)
        flag_values.unparse_flags()  # defaults again: in-process reuse must not inherit earlier flags
        try:
            rest = flag_values(argv)
        except flags.Error as error:
            print(f"{argv[0]}: error: {error}", file=sys.stderr)
            sys.exit(USAGE)
        flags.FLAGS(argv[:1], known_only=True)  # absl.app insists that the global flags are parsed
        return rest

    return parse


def flag_name(argument: str, flag_values: flags.FlagValues, renames: Dict[str, str] = None) -> str:
    """``--flag`` for a Python argument the command has a flag for, else the argument."""
    name = (renames or {}).get(argument, argument)
    return f"--{name}" if name in flag_values else argument


def fail(command: str, message: str, code: int = FAILED) -> int:
    """Prints the command's one error line; returns the exit code."""
    print(f"effv2 {command}: error: {message}", file=sys.stderr)
    return code


def guarded(command: str, flag_values: flags.FlagValues, body: Callable[[List[str]], int],
            renames: Dict[str, str] = None) -> Callable[[List[str]], int]:
    """``main(argv)`` of a command: runs ``body`` with quiet Python logs and turns every
    user error into one line (library errors rendered with the command's flag names)."""

    def main(argv) -> int:
        from effv2_keras.export.errors import ExportError
        from effv2_keras.run_dir import ManifestError

        quiet_python_logs()
        try:
            return body(argv) or 0
        except UsageError as error:
            return fail(command, str(error), USAGE)
        except ExportError as error:
            return fail(command, error.render(lambda name: flag_name(name, flag_values, renames)))
        except ManifestError as error:
            return fail(command, str(error))

    return main


def no_arguments(argv: List[str]) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value).")


def existing_path(value, flag: str) -> Path:
    """``value`` as a Path; a usage error naming ``flag`` when nothing is there."""
    path = Path(value).expanduser()
    if not path.exists():
        raise UsageError(f"--{flag} {value}: no such file or directory.")
    return path


def tensorflow_verbose(environ=os.environ) -> bool:
    """True when the user asked for TensorFlow's own logs: ``EFFV2_TF_LOG=1``, or a
    ``TF_CPP_MIN_LOG_LEVEL`` of their own."""
    return environ.get(VERBOSE_ENV, "") not in ("", "0") or "TF_CPP_MIN_LOG_LEVEL" in environ


def import_tensorflow(environ=os.environ) -> None:
    """Imports TensorFlow, hiding its C++ banner (oneDNN, CUDA, CPU features) unless
    ``tensorflow_verbose``. TF 2.21 prints the banner before its log level applies, so the
    quiet import also holds back stderr meanwhile and passes on every other line."""
    if "tensorflow" in sys.modules or tensorflow_verbose(environ):
        import tensorflow  # noqa: F401
        return
    environ["TF_CPP_MIN_LOG_LEVEL"] = QUIET_TF_LOG_LEVEL
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines() if not _banner(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def _banner(line: str) -> bool:
    """TensorFlow's start-up INFO/WARNING lines (``I0000 ... port.cc:153] oneDNN ...``)."""
    return (line[:1] in "IW" and line[1:5].isdigit()) or line.startswith(
        ("WARNING: All log messages before absl::InitializeLog()", "To enable the following instructions"))


def quiet_python_logs(environ=os.environ) -> None:
    """absl.app turns Python logging up to INFO; TensorFlow's save/load chatter (e.g. the
    SavedModel loader's "unsaved custom gradients" warnings while converting) is not for users."""
    import logging as python_logging

    from absl import logging

    logging.set_verbosity(logging.WARNING)
    if not tensorflow_verbose(environ):
        python_logging.getLogger("tensorflow").setLevel(python_logging.ERROR)


def run(main: Callable, parse: Callable, argv=None) -> None:
    """absl's ``app.run`` with the command's own parser."""
    app.run(main, argv=argv, flags_parser=parse)
