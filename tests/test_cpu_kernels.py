"""The CPU-kernel choice: oneDNN on where TensorFlow leaves it off on AVX2 x86, the user's
TF_ENABLE_ONEDNN_OPTS always first, and the choice really reaching TensorFlow."""

import json
import os
import subprocess
import sys

import pytest

from effv2_keras import cpu_kernels

AVX2 = {"sse4_2", "avx", "avx2", "fma"}


@pytest.mark.parametrize("value, expected", [("0", False), ("1", True), ("false", False)])
def test_user_environment_always_wins(value, expected):
    for flags in (AVX2, AVX2 | {"avx512f"}, set()):
        choice = cpu_kernels.choose({cpu_kernels.ENV: value}, machine="x86_64", flags=flags)
        assert (choice.onednn, choice.source) == (expected, "user")


@pytest.mark.parametrize("machine, flags, expected", [
    ("x86_64", AVX2, (True, "package")),
    ("x86_64", AVX2 | {"avx512f", "avx512_bf16"}, (None, "tensorflow")),  # TF turns it on itself
    ("x86_64", {"sse4_2", "avx"}, (None, "tensorflow")),
    ("aarch64", {"asimd", "sve"}, (None, "tensorflow")),
])
def test_choice_by_cpu(machine, flags, expected):
    choice = cpu_kernels.choose({}, machine=machine, flags=flags)
    assert (choice.onednn, choice.source) == expected


def test_apply_sets_only_where_chosen_and_never_overrides_the_user(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_applied", None)
    monkeypatch.setattr(cpu_kernels, "cpu_flags", lambda: frozenset(AVX2))
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "x86_64")
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    environ = {}
    assert cpu_kernels.apply(environ).source == "package" and environ == {cpu_kernels.ENV: "1"}
    monkeypatch.setattr(cpu_kernels, "_applied", None)
    environ = {cpu_kernels.ENV: "0"}
    assert cpu_kernels.apply(environ).source == "user" and environ == {cpu_kernels.ENV: "0"}


def _probe(env_value):
    """A fresh process that imports the package first, then TensorFlow: what ran."""
    env = {k: v for k, v in os.environ.items() if k != cpu_kernels.ENV}
    if env_value is not None:
        env[cpu_kernels.ENV] = env_value
    code = ("import json, os, effv2_keras; from effv2_keras import cpu_kernels; import tensorflow;"
            "print(json.dumps([os.environ.get(cpu_kernels.ENV), cpu_kernels.onednn_active(),"
            " cpu_kernels.choose({}).source]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_choice_reaches_tensorflow():
    env_value, active, source = _probe(None)
    if source == "package":  # this CPU is one where the package turns oneDNN on
        assert (env_value, active) == ("1", True)
    else:
        assert env_value is None
    assert _probe("0")[:2] == ["0", False]  # the user's "off" wins on every CPU


def test_bf16_hardware_reads_the_bf16_flags(monkeypatch):
    assert cpu_kernels.bf16_hardware({"avx2", "avx512f", "avx512_bf16"})
    assert cpu_kernels.bf16_hardware({"avx2", "amx_bf16", "amx_tile"})
    assert not cpu_kernels.bf16_hardware({"avx2", "fma", "avx512f"})
    monkeypatch.setattr(cpu_kernels, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not cpu_kernels.bf16_hardware()
