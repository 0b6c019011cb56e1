"""The native ``.keras`` file: the inference copy of a model (EMA weights when an
in-memory model's optimizer has them, no optimizer state), with a ``run.json``
(``effv2_keras.run_dir``) beside it naming its class names and evaluation size.

The output folder is itself a run directory for the other exporters, ``effv2 predict``
and ``effv2 evaluate``, and the ``.keras`` file alone (with the ``run.json`` of its
folder) carries the same facts:

    >>> from effv2_keras import export, run_dir
    >>> path = export.export_keras("runs/pets", "exported/pets")  # doctest: +SKIP
    >>> run_dir.find(path).class_names  # doctest: +SKIP
    ['cat', 'dog']
"""

from __future__ import annotations

import time
from pathlib import Path

from effv2_keras import run_dir
from effv2_keras.export.artifacts import prepare_out_dir, write_metadata
from effv2_keras.export.source import Source, inference_copy, load_source

FILENAME = run_dir.RUN_FILES["model"]


def export_keras(model, out_dir, *, use_ema: bool = True, class_names=None, image_size=None) -> Path:
    """Writes ``out_dir/model.keras`` + ``run.json``; returns the ``.keras`` file's path.

    Args:
        model: a built Keras model, a ``.keras`` file or a run directory.
        out_dir: output directory.
        use_ema: an in-memory model compiled with ``use_ema=True`` exports its averages.
        class_names: names of the outputs (default: the run's; ``class_<i>`` when unknown).
        image_size: the evaluation size recorded for a model that accepts any size
            (default: the run's, else the variant's).
    """
    start = time.perf_counter()
    source = load_source(model, class_names, use_ema)
    model = source.model
    if getattr(model, "optimizer", None) is not None:
        model = inference_copy(model)  # drop the optimizer state from the deployment file
    out = prepare_out_dir(out_dir)
    path = out / FILENAME
    model.save(path)
    if source.head.dense is not None:  # a feature extractor has no classes to describe
        run_dir.write(out, _manifest(source, image_size))
    write_metadata(out, format="keras", file=FILENAME, model=model.name, input_range="0-255",
                   class_names=source.class_names, num_classes=source.head.num_classes, ema=source.ema,
                   seconds=round(time.perf_counter() - start, 2))
    return path


def _manifest(source: Source, image_size) -> run_dir.RunManifest:
    """The run's manifest (or a new one) describing the exported file."""
    classes = source.head.num_classes
    names = source.class_names or [f"class_{i}" for i in range(classes)]
    height, width = source.fixed_size(image_size)
    facts = dict(num_classes=classes, class_names=names, eval_size=max(height, width),
                 classifier_activation=source.head.activation, files={"model": FILENAME})
    if source.manifest is not None:
        return source.manifest.replace(**facts)
    return run_dir.RunManifest(model=source.model.name, **facts)
