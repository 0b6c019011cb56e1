"""Weight import: our files, keras.applications .h5 files, timm state dicts, in-memory transfer."""

from __future__ import annotations

import os


def load_weights(model, path, spec=None):
    """Loads a weights file into ``model`` (placeholder: .weights.h5/.keras of ours only)."""
    path = os.fspath(path)
    if path.endswith(".keras") or path.endswith(".weights.h5"):
        model.load_weights(path)
        return model
    raise ValueError(f"Unsupported weights file {path!r}.")
