"""Imports timm without a working torchvision (for cross-framework checks and benchmarks).

Every timm release imports torchvision at import time (FrozenBatchNorm2d, transforms,
datasets), but the ``tf_efficientnet*`` networks never use it, and PyPI's torchvision is a
CUDA build that fails to import beside the CPU torch. So when torchvision is absent or
broken, timm is imported with placeholders for those names, which raise if anything calls
them; the placeholders are removed right after the import, so nothing else in the process
sees a torchvision. With a working torchvision the real one is used.

Test and benchmark support, not part of the package: the scripts of tools/ import it as a
sibling module (as they do step_harness), and tests/models/test_parity.py loads it by path.

Example (with tools/ on ``sys.path``, as it is for ``python tools/benchmark.py``):
    >>> from timm_import import import_timm
    >>> timm = import_timm()  # None when torch or timm is not installed
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types


class _Absent(type):
    """A torchvision name timm imports but tf_efficientnet* never uses: any use raises."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Absent(name, (), {})

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(f"torchvision is not installed: {cls.__name__} is unavailable")


class _AbsentModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Absent(name, (), {})


class _TorchvisionPlaceholder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torchvision":
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _AbsentModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def _drop_torchvision_modules():
    for key in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
        del sys.modules[key]


def timm_installed() -> bool:
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("timm") is not None


def import_timm():
    """The timm module, or None when torch or timm is not installed."""
    if not timm_installed():
        return None
    if "timm" in sys.modules:
        return sys.modules["timm"]
    try:
        import torchvision  # noqa: F401
        import timm

        return timm
    except Exception:  # torchvision absent, or the CUDA build (RuntimeError on import)
        _drop_torchvision_modules()
    finder = _TorchvisionPlaceholder()
    sys.meta_path.insert(0, finder)
    try:
        import timm
    finally:
        sys.meta_path.remove(finder)
        _drop_torchvision_modules()
    return timm
