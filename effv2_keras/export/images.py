"""Images for export, verification and prediction: decode + resize + center crop
(the same TF ops run eagerly here and inside the ``serving_bytes`` signature),
and batches of real images from a dataset.

Datasets are read with ``effv2_keras.data.load`` / ``make_pipeline``; a plain
folder of class sub-folders (optionally split into ``train``/``val``/``test``) is
read directly, class-balanced.
"""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from effv2_keras.data import ops as data_ops
from effv2_keras.export.common import ExportError

# Central box of each side before resizing, as effv2_keras.data evaluates (224 of 256).
DEFAULT_CROP_FRACTION = data_ops.EVAL_CROP_FRACTION
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SPLIT_FALLBACKS = {"test": ("test", "val", "validation"), "val": ("val", "validation", "test"),
                   "train": ("train",)}


def center_crop_resize(image, size: Tuple[int, int], crop_fraction: float = DEFAULT_CROP_FRACTION):
    """``effv2_keras.data``'s evaluation crop (``data.center_crop_resize``: the central box of
    ``crop_fraction`` of each side, aspect kept within 4/3 of the target's, resized to
    ``size``), clipped to 0-255: what the trainer evaluated on is what the artifacts serve.
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise ExportError(f"crop_fraction must be in (0, 1]; got {crop_fraction}.")
    return tf.clip_by_value(data_ops.center_crop_resize(image, size, crop_fraction), 0.0, 255.0)


def decode_and_center_crop(image_bytes, size: Tuple[int, int], crop_fraction: float = DEFAULT_CROP_FRACTION):
    """Encoded JPEG/PNG/GIF/BMP bytes -> float32 [h, w, 3] in 0-255 (grey and RGBA become RGB)."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    return center_crop_resize(image, size, crop_fraction)


def load_image_files(paths: Sequence, size: Tuple[int, int],
                     crop_fraction: float = DEFAULT_CROP_FRACTION) -> np.ndarray:
    """Reads image files into float32 [n, h, w, 3] (0-255); one-line error naming a bad file."""
    size = (int(size[0]), int(size[1]))
    contents = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ExportError(f"{path}: no such image file.")
        contents.append(path.read_bytes())
    if not contents:
        raise ExportError("no image files given.")
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(contents, tf.string)).map(
        lambda data: decode_and_center_crop(data, size, crop_fraction), num_parallel_calls=tf.data.AUTOTUNE)
    try:
        return np.concatenate([batch.numpy() for batch in dataset.batch(64)]).astype(np.float32)
    except tf.errors.OpError:
        pass  # find and name the culprit, one file at a time
    for path, data in zip(paths, contents):
        try:
            decode_and_center_crop(data, size, crop_fraction)
        except (tf.errors.OpError, ValueError) as error:
            text = re.sub(r"\{\{[^}]*\}\}", "", str(error)).strip()  # drop TF's {{function_node ...}}
            reason = text.splitlines()[0][:120].rstrip(". ") if text else "decode failed"
            raise ExportError(f"{path}: cannot decode image (corrupt, or not JPEG/PNG/GIF/BMP): "
                              f"{reason}") from None
    raise ExportError("cannot decode the images.")


def check_image_batch(images) -> np.ndarray:
    """float32 [n, h, w, 3]; one-line error for anything else."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ExportError(f"expected RGB images of shape [batch, height, width, 3]; got shape {images.shape} "
                          "(wrong channel count? convert greyscale/RGBA images to RGB).")
    return images.astype(np.float32)


# --------------------------------------------------------------------------- datasets


@dataclasses.dataclass
class ImageBatch:
    images: np.ndarray  # float32 [n, h, w, 3], 0-255
    labels: Optional[np.ndarray]  # int64 [n] or None
    class_names: Optional[List[str]]
    paths: Optional[List[str]] = None


def list_images(folder: Path) -> List[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def folder_split(data_dir, split: str) -> Path:
    """``data_dir/<split>`` (or a close name) when the folder is split, else the folder itself."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ExportError(f"{root}: no such data directory.")
    for name in SPLIT_FALLBACKS.get(split, (split,)):
        if (root / name).is_dir():
            return root / name
    if any((root / name).is_dir() for name in ("train", "val", "validation", "test")):
        raise ExportError(f"{root} has no {split!r} split.")
    return root


def sample_folder(data_dir, size, count: Optional[int] = None, split: str = "test", seed: int = 0,
                  crop_fraction: float = DEFAULT_CROP_FRACTION) -> ImageBatch:
    """A class-balanced, seeded sample of a folder of class sub-folders.

    A folder holding images directly (no class folders) gives unlabelled images.
    """
    root = folder_split(data_dir, split)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    rng = random.Random(seed)
    if not classes:
        files = list_images(root)
        rng.shuffle(files)
        files = files[:count] if count else files
        if not files:
            raise ExportError(f"{root}: no images found.")
        return ImageBatch(load_image_files(files, size, crop_fraction), None, None, [str(f) for f in files])
    per_class = []
    for name in classes:
        files = list_images(root / name)
        rng.shuffle(files)
        per_class.append(files)
    picked: List[Tuple[Path, int]] = []
    depth = max(len(f) for f in per_class)
    for i in range(depth):  # round-robin over classes keeps the sample balanced
        for label, files in enumerate(per_class):
            if i < len(files):
                picked.append((files[i], label))
    picked = picked[:count] if count else picked
    if not picked:
        raise ExportError(f"{root}: no images found in its class folders.")
    paths = [p for p, _ in picked]
    labels = np.array([label for _, label in picked], np.int64)
    return ImageBatch(load_image_files(paths, size, crop_fraction), labels, classes, [str(p) for p in paths])


def load_split(data, size, split: str = "test", count: Optional[int] = None, seed: int = 0,
               batch_size: int = 32, crop_fraction: float = DEFAULT_CROP_FRACTION) -> ImageBatch:
    """Real images (and labels) of one split of ``data``.

    ``data`` is a folder of class folders (split into train/val/test or not) or
    any ``effv2_keras.data.load`` spec (``folder:PATH``, ``tfds:NAME``, ``digits``).
    The split falls back test -> val when absent; images are center-cropped as
    the data package evaluates.
    """
    from effv2_keras.data import load, make_pipeline

    spec = str(data)
    if Path(spec).is_dir():  # a plain folder path is the data package's folder:PATH spec
        spec = f"folder:{spec}"
    try:
        splits = load(spec)
    except (ValueError, FileNotFoundError) as error:
        raise ExportError(f"cannot load data {data!r}: {error}") from None
    source = None
    for name in SPLIT_FALLBACKS.get(split, (split,)):
        candidate = getattr(splits, name, None)
        if candidate is not None and getattr(candidate, "num_examples", 0):
            source = candidate
            break
    if source is None:
        raise ExportError(f"{data} has no {split!r} split.")
    if count and dataclasses.is_dataclass(source) and hasattr(source.dataset, "shuffle"):
        # A truncated sample must not be the first classes of a class-sorted split.
        source = dataclasses.replace(
            source, dataset=source.dataset.shuffle(max(1, int(source.num_examples)), seed=seed))
    image_size = size[0] if size[0] == size[1] else tuple(size)
    pipeline = make_pipeline(source, image_size, batch_size, splits.num_classes, training=False,
                             eval_crop_fraction=crop_fraction)
    images, labels, total = [], [], 0
    for batch_images, batch_labels in pipeline:
        images.append(np.asarray(batch_images, np.float32))
        labels.append(np.argmax(np.asarray(batch_labels), axis=-1))
        total += len(images[-1])
        if count and total >= count:
            break
    images_np = np.concatenate(images)[:count] if count else np.concatenate(images)
    labels_np = np.concatenate(labels)[:count] if count else np.concatenate(labels)
    return ImageBatch(images_np, labels_np.astype(np.int64), list(splits.class_names))
