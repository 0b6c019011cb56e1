"""Checkpoint files: atomic writes, keep-last-K, newest GOOD checkpoint on resume."""

import logging
import os

import numpy as np
import pytest

from effv2_keras.train import checkpoint as ckpt


def arrays(step):
    return {"model.00000": np.full([3, 2], step, "float32"), "model.00001": np.arange(4) + step}


def test_save_is_atomic_and_keeps_last_k(tmp_path, monkeypatch):
    manager = ckpt.CheckpointManager(str(tmp_path), keep=2)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(ckpt.os, "replace", lambda a, b: (replaced.append((a, b)), real_replace(a, b)))
    for step in (10, 20, 30):
        path = manager.save(step, arrays(step), {"global_step": step})
        assert os.path.basename(path) == f"ckpt-{step:09d}.npz"
    # each checkpoint went through a temporary file in the same directory + os.replace
    assert [os.path.basename(b) for _, b in replaced] == [f"ckpt-{s:09d}.npz" for s in (10, 20, 30)]
    assert all(os.path.dirname(a) == str(tmp_path) and ".tmp-" in a for a, _ in replaced)
    assert [s for s, _ in manager.list()] == [20, 30]
    assert sorted(os.listdir(tmp_path)) == ["ckpt-000000020.npz", "ckpt-000000030.npz"]
    path, loaded, state = manager.newest_good()
    assert state == {"global_step": 30}
    np.testing.assert_array_equal(loaded["model.00001"], np.arange(4) + 30)


def test_a_kill_during_a_write_leaves_the_previous_checkpoints(tmp_path):
    manager = ckpt.CheckpointManager(str(tmp_path), keep=3)
    manager.save(5, arrays(5), {"global_step": 5})
    # what a SIGKILL in the middle of np.savez leaves behind: a partial temporary file
    good = (tmp_path / "ckpt-000000005.npz").read_bytes()
    (tmp_path / "ckpt-000000010.npz.tmp-12345").write_bytes(good[: len(good) // 2])
    assert [s for s, _ in manager.list()] == [5]
    assert manager.newest_good()[2]["global_step"] == 5


def test_unreadable_newest_is_skipped_with_a_warning(tmp_path, caplog):
    manager = ckpt.CheckpointManager(str(tmp_path), keep=5)
    manager.save(1, arrays(1), {"global_step": 1})
    manager.save(2, arrays(2), {"global_step": 2})
    manager.save(3, arrays(3), {"global_step": 3})
    newest = tmp_path / "ckpt-000000003.npz"
    newest.write_bytes(newest.read_bytes()[:200])  # truncated
    (tmp_path / "ckpt-000000002.npz").write_bytes(b"not a zip file at all")
    with caplog.at_level(logging.WARNING, logger="effv2_keras.train"):
        path, loaded, state = manager.newest_good()
    assert state["global_step"] == 1 and path.endswith("ckpt-000000001.npz")
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "ckpt-000000003.npz is unreadable" in warned and "ckpt-000000002.npz is unreadable" in warned


def test_all_unreadable_is_a_clear_error_and_none_is_none(tmp_path):
    manager = ckpt.CheckpointManager(str(tmp_path / "empty"), keep=2)
    assert manager.newest_good() is None
    manager = ckpt.CheckpointManager(str(tmp_path), keep=2)
    (tmp_path / "ckpt-000000007.npz").write_bytes(b"\x00" * 64)
    with pytest.raises(ckpt.CheckpointError, match="no readable checkpoint .*ckpt-000000007.npz"):
        manager.newest_good()


def test_a_checkpoint_that_does_not_fit_is_an_error_not_skipped(tmp_path):
    manager = ckpt.CheckpointManager(str(tmp_path), keep=2)
    manager.save(1, arrays(1), {"global_step": 1})

    def check(loaded, state):
        raise ckpt.CheckpointError("--model: different")

    with pytest.raises(ckpt.CheckpointError, match="--model"):
        manager.newest_good(check=check)


def test_non_chief_never_writes(tmp_path):
    manager = ckpt.CheckpointManager(str(tmp_path / "c"), keep=2, write=False)
    assert manager.save(1, arrays(1), {}) is None
    assert not (tmp_path / "c").exists()
