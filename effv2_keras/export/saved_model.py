"""SavedModel for TF Serving, with two signatures.

``serving_default``: ``images`` float32 [batch, H, W, 3], 0-255 pixels (H and W
free when the model accepts any size) -> ``probabilities``, ``logits``,
``top_k_classes`` (int32), ``top_k_scores`` and, when the class names are
known, ``top_k_class_names`` (string).

``serving_bytes``: ``image_bytes`` string [batch] of encoded JPEG/PNG/GIF/BMP
images -> the same outputs; decode, center crop (the central 0.875 of each side, as
effv2_keras.data evaluates) and resize run in the graph, so a REST client can
post base64 images.

Example:
    >>> from effv2_keras import export
    >>> export.export_saved_model("runs/clothing", "exported/clothing/1")  # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import tensorflow as tf

from effv2_keras.export import images
from effv2_keras.export.artifacts import prepare_out_dir, write_metadata
from effv2_keras.export.errors import ExportError
from effv2_keras.export.graph import INFERENCE_SAVE_OPTIONS, VariableHolder, assert_inference_graph
from effv2_keras.export.head import Head, check_rgb_model, pooled_features, static_image_size
from effv2_keras.export.source import load_source

SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "serving_bytes"


class ServingModule(VariableHolder):
    """Holds the model's tf.Variables and the two serving functions."""

    def __init__(self, model, head: Head, class_names: Optional[Sequence[str]], image_size, top_k: int,
                 crop_fraction: float = images.DEFAULT_CROP_FRACTION):
        super().__init__(model.variables, model.trainable_variables)
        self._head = head  # a plain dataclass: the Keras model inside is not tracked
        self._size = image_size
        self._crop_fraction = crop_fraction
        self._top_k = top_k
        self._class_names = list(class_names) if class_names else None
        self.serve = tf.function(self._serve)
        self.serve_bytes = tf.function(self._serve_bytes)

    def _outputs(self, pixels):
        head = self._head
        features = pooled_features(head, pixels)
        if head.dense is None:
            return {"features": features}
        logits = head.logits(features)
        probabilities = head.probabilities(logits)
        scores, classes = tf.math.top_k(probabilities, k=self._top_k)
        outputs = {"probabilities": probabilities, "logits": logits,
                   "top_k_classes": classes, "top_k_scores": scores}
        if self._class_names:
            outputs["top_k_class_names"] = tf.gather(tf.constant(self._class_names), classes)
        return outputs

    def _serve(self, images):
        return self._outputs(images)

    def _serve_bytes(self, image_bytes):
        pixels = tf.map_fn(
            lambda data: images.decode_and_center_crop(data, self._size, self._crop_fraction),
            image_bytes, fn_output_signature=tf.TensorSpec([*self._size, 3], tf.float32))
        return self._outputs(pixels)


def export_saved_model(model, out_dir, *, class_names: Optional[Sequence[str]] = None, image_size=None,
                       top_k: int = 5, crop_fraction: Optional[float] = None,
                       use_ema: bool = True) -> Path:
    """Writes a TF Serving SavedModel (``serving_default`` + ``serving_bytes``) to ``out_dir``.

    Args:
        model: a built Keras model, a ``.keras`` file or a run directory.
        out_dir: the SavedModel directory (for TF Serving: ``<base>/<version>``).
        class_names: names of the classes (default: the run's ``run.json``).
        image_size: the size ``serving_bytes`` crops to; defaults to the model's
            fixed input size (or the run's, else the variant's, eval size for a
            size-free model).
        top_k: how many classes ``top_k_*`` report (capped at the class count).
        crop_fraction: ``serving_bytes`` crops the central ``crop_fraction`` of
            each side before resizing (aspect kept within 4/3 of the target's);
            the run's (default 0.875, 224 of 256, how effv2_keras.data evaluates);
            1.0 keeps the whole image.
        use_ema: an in-memory model compiled with ``use_ema=True`` exports its averages.

    Returns:
        ``out_dir`` as a Path.
    """
    start = time.perf_counter()
    source = load_source(model, class_names, use_ema)
    model, head, names = source.model, source.head, source.class_names
    check_rgb_model(model, SIGNATURE_BYTES)
    size = source.fixed_size(image_size)
    crop_fraction = source.crop_fraction if crop_fraction is None else crop_fraction
    top_k = min(int(top_k), head.num_classes or 1)
    if top_k < 1:
        raise ExportError(f"{{top_k}} must be >= 1; got {top_k}.", "top_k")
    module = ServingModule(model, head, names, size, top_k, crop_fraction)
    static = static_image_size(model)
    height, width = static if static else (None, None)
    signatures = {
        SIGNATURE_IMAGES: module.serve.get_concrete_function(
            tf.TensorSpec([None, height, width, 3], tf.float32, name="images")),
        SIGNATURE_BYTES: module.serve_bytes.get_concrete_function(
            tf.TensorSpec([None], tf.string, name="image_bytes")),
    }
    for name, function in signatures.items():
        assert_inference_graph(function, f"SavedModel signature {name}")
    out = prepare_out_dir(out_dir)
    tf.saved_model.save(module, str(out), signatures=signatures, options=INFERENCE_SAVE_OPTIONS)
    write_metadata(
        out, format="saved_model", model=model.name, image_size=list(size), input_range="0-255",
        class_names=names, num_classes=head.num_classes, top_k=top_k, crop_fraction=crop_fraction,
        ema=source.ema, signatures=sorted(signatures), seconds=round(time.perf_counter() - start, 2))
    return out
