"""Which CPU kernels TensorFlow runs, chosen before TensorFlow is imported.

TensorFlow's x86 builds carry oneDNN kernels but turn them on by default only on CPUs with
AVX-512 (its ``port.cc`` decides from the CPU's features). On an AVX2-only CPU it falls back
to the Eigen kernels, which measured slower here: full-width V2-B0 at 128 px, float32,
batch 32, took 26.5 images/s with Eigen and 30.2 with oneDNN on a 2-core AMD EPYC (AVX2,
FMA, no AVX-512): +14% (docs/PERFORMANCE.md). So the package turns oneDNN on for x86 CPUs
with AVX2 and FMA, where TensorFlow would leave it off, and leaves everything else to
TensorFlow. A ``TF_ENABLE_ONEDNN_OPTS`` of the user's own always wins.

Standard library only, so it can run before TensorFlow loads:

    >>> choose({"TF_ENABLE_ONEDNN_OPTS": "0"}, machine="x86_64", flags={"avx2", "fma"}).source
    'user'
    >>> choice = choose({}, machine="x86_64", flags={"avx2", "fma"})
    >>> choice.onednn, choice.source
    (True, 'package')
    >>> choose({}, machine="x86_64", flags={"avx2", "fma", "avx512f"}).source
    'tensorflow'
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from typing import FrozenSet, Iterable, Mapping, MutableMapping, Optional

ENV = "TF_ENABLE_ONEDNN_OPTS"
_X86 = ("x86_64", "amd64", "i686", "i386")


@dataclass(frozen=True)
class KernelChoice:
    """What was decided and why.

    ``onednn``: True/False when the package or the user set it, None when TensorFlow's own
    default applies. ``source``: ``user`` (their environment variable), ``package`` (set here),
    ``tensorflow`` (its default), or ``too-late`` (TensorFlow was imported before the package
    could choose: its default applies).
    """

    onednn: Optional[bool]
    source: str
    reason: str


def cpu_flags(path: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """The CPU's feature flags (``avx2``, ``fma``, ``avx512f`` ...); empty where unknown."""
    try:
        with open(path, encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (``AMD EPYC``), or the platform's processor string."""
    try:
        with open(path, encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choose(environ: Mapping[str, str], machine: Optional[str] = None,
           flags: Optional[Iterable[str]] = None) -> KernelChoice:
    """The kernel choice for this environment and CPU (pure: nothing is set)."""
    if ENV in environ:
        value = environ[ENV].strip().lower() not in ("0", "false", "")
        return KernelChoice(value, "user", f"{ENV}={environ[ENV]} set by the user")
    machine = (machine or platform.machine()).lower()
    flags = frozenset(flags) if flags is not None else cpu_flags()
    if machine not in _X86:
        return KernelChoice(None, "tensorflow", f"TensorFlow's default on {machine}")
    if "avx512f" in flags:
        return KernelChoice(None, "tensorflow", "TensorFlow's default (on with AVX-512)")
    if {"avx2", "fma"} <= flags:
        return KernelChoice(True, "package", "AVX2 without AVX-512: TensorFlow leaves oneDNN off, measured faster on")
    return KernelChoice(None, "tensorflow", "TensorFlow's default (no AVX2)")


# bf16 arithmetic in hardware: AVX512_BF16 (dot products) or AMX (tiles). oneDNN emulates bf16
# without them, slower than float32.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def bf16_hardware(flags: Optional[Iterable[str]] = None) -> bool:
    """Whether this x86 CPU computes bf16 in hardware (AVX512_BF16 or AMX).

    >>> bf16_hardware({"avx2", "avx512f", "avx512_bf16"}), bf16_hardware({"avx2", "fma"})
    (True, False)
    """
    return bool(BF16_FLAGS & frozenset(cpu_flags() if flags is None else flags))


_applied: Optional[KernelChoice] = None


def apply(environ: MutableMapping[str, str] = os.environ) -> KernelChoice:
    """Sets ``TF_ENABLE_ONEDNN_OPTS`` where ``choose`` says so; call before TensorFlow loads.

    Idempotent; after TensorFlow is imported it changes nothing and says so.
    """
    global _applied
    if _applied is not None:
        return _applied
    choice = choose(environ)
    if choice.source == "package":
        if "tensorflow" in sys.modules:
            choice = KernelChoice(None, "too-late", "TensorFlow was imported before effv2_keras: its default applies")
        else:
            environ[ENV] = "1"
    _applied = choice
    return choice


def onednn_active() -> Optional[bool]:
    """Whether the running TensorFlow uses oneDNN kernels (None if it cannot say)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def describe() -> str:
    """One line for run headers and benchmark JSON: which kernels run, and why."""
    choice = _applied or choose(os.environ)
    active = onednn_active()
    kernels = {True: "oneDNN", False: "Eigen (oneDNN off)", None: "unknown"}[active]
    return f"{kernels}; {choice.reason}; CPU {cpu_model()}"


def machine_facts() -> dict:
    """The CPU's model, its vector flags and the kernel choice, for benchmark JSON."""
    flags = cpu_flags()
    vector = sorted(flag for flag in flags if flag.startswith(("avx", "fma", "sse4", "amx")))
    choice = _applied or choose(os.environ)
    return dict(cpu_model=cpu_model(), machine=platform.machine(), cpu_count=os.cpu_count(),
                cpu_vector_flags=vector, onednn=onednn_active(), onednn_source=choice.source,
                onednn_env=os.environ.get(ENV))
