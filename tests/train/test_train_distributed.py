"""tf.distribute: MirroredStrategy over 2 logical CPUs, MultiWorkerMirroredStrategy over 2 processes.

Each runs scripts/distributed_run.py in its own process(es); all three processes are
started together when this module begins, so they overlap on the 2 cores.
"""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from train_helpers import REPO, SCRIPTS, subprocess_env

SCRIPT = SCRIPTS / "distributed_run.py"
TIMEOUT = 500


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class _Job:
    def __init__(self, tmp, name, mode, **env):
        self.log = tmp / f"{name}.log"
        self.result = tmp / f"{name}.json"
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), mode, str(tmp / "run"), str(self.result)], cwd=REPO,
                env=subprocess_env(**env), stdout=f, stderr=subprocess.STDOUT)

    def finish(self):
        try:
            code = self.proc.wait(timeout=TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert code == 0, self.log.read_text()[-4000:]
        return json.loads(self.result.read_text())

    def weights(self):
        return np.load(str(self.result).replace(".json", ".npz"))


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    mirrored = _Job(tmp_path_factory.mktemp("mirrored"), "mirrored", "mirrored")
    tmp = tmp_path_factory.mktemp("multiworker")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    workers = [_Job(tmp, f"worker{i}", "multiworker", TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": i}})) for i in range(2)]
    yield {"mirrored": mirrored, "workers": workers}
    for job in [mirrored, *workers]:
        if job.proc.poll() is None:
            job.proc.kill()


def test_mirrored_strategy_on_two_logical_cpus_with_mixed_float16(jobs):
    r = jobs["mirrored"].finish()
    assert r["replicas"] == 2 and r["per_replica_batch"] == 8 and r["global_step"] == 3
    for batch in r["batches"]:
        # each replica got its own half of the global batch of 16 ...
        assert batch["shapes"] == [[8, 32, 32, 3], [8, 32, 32, 3]]
        # ... and the halves differ
        assert batch["digests"][0] != batch["digests"][1]
    # the step was traced for the per-replica shape; every copy of every variable agrees,
    # BN moving statistics and EMA shadows included
    assert {tuple(s) for s in r["trace_log"]} == {(8, 32, 32, 3)}
    assert r["model_spread"] == 0.0 and r["ema_spread"] == 0.0
    assert r["val"]["examples"] == r["num_val"]  # distributed eval: padding not counted
    assert np.isfinite(r["val"]["loss"]) and r["model_path"]
    # mixed_float16: float16 compute, float32 logits, dynamic loss scaling
    assert (r["compute_dtype"], r["output_dtype"], r["optimizer"]) == \
        ("float16", "float32", "LossScaleOptimizer")


@pytest.mark.slow
def test_multiworker_mirrored_two_local_workers(jobs):
    (r0, w0), (r1, w1) = ((job.finish(), job.weights()) for job in jobs["workers"])
    assert (r0["replicas"], r0["workers"], r0["chief"]) == (2, 2, True)
    assert (r1["replicas"], r1["workers"], r1["chief"]) == (2, 2, False)
    assert r0["global_step"] == r1["global_step"] == 3
    # the two workers' replicas saw different examples at every step
    for b0, b1 in zip(r0["batches"], r1["batches"]):
        assert b0["shapes"] == b1["shapes"] == [[8, 32, 32, 3]]
        assert b0["digests"] != b1["digests"]
    # and ended with identical weights (BN statistics and EMA included)
    assert sorted(w0.files) == sorted(w1.files)
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
    # evaluation is global: both workers report the same numbers over the whole split
    assert r0["val"] == r1["val"] and r0["val"]["examples"] == r0["num_val"]
    # only the chief writes the run directory
    assert r0["model_path"] and r1["model_path"] is None


def test_loss_scaling_skips_on_every_replica_when_one_overflows():
    # Keras' LossScaleOptimizer decides from the first replica only; the trainer makes all
    # replicas agree (train.step.skip_together). Without it, the mirrored fp16 run above
    # summed another replica's inf into the weights.
    out = subprocess.run([sys.executable, str(SCRIPTS / "skip_together.py")], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"one_overflow": [False, False], "none": [True, True]}
