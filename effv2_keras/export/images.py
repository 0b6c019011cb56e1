"""Images for export, verification and prediction: decode + resize + center crop
(the same TF ops run eagerly here and inside the ``serving_bytes`` signature),
and batches of real images from a dataset.

A folder of class folders (split into ``train``/``val``/``test`` or not) is listed by
``effv2_keras.data.folder.list_folder``, the data package's own reader, and only the
sampled files are decoded; any other ``effv2_keras.data.load`` spec (``digits``,
``tfds:NAME``) goes through the data pipeline.

    >>> batch = load_split("../shared/data/signdigits100", (64, 64), "test", count=20)  # doctest: +SKIP
    >>> batch.images.shape, batch.class_names[:2]  # doctest: +SKIP
    ((20, 64, 64, 3), ['0', '1'])
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from effv2_keras.data import ops as data_ops
from effv2_keras.export.errors import ExportError

# Central box of each side before resizing, as effv2_keras.data evaluates (224 of 256).
DEFAULT_CROP_FRACTION = data_ops.EVAL_CROP_FRACTION
# A split asked for and where else to look; an unsplit folder is all "train".
SPLIT_FALLBACKS = {"test": ("test", "val"), "val": ("val", "test"), "train": ("train",)}
FOLDER_PREFIX = "folder:"


def center_crop_resize(image, size: Tuple[int, int], crop_fraction: float = DEFAULT_CROP_FRACTION):
    """``effv2_keras.data``'s evaluation crop (``data.center_crop_resize``: the central box of
    ``crop_fraction`` of each side, aspect kept within 4/3 of the target's, resized to
    ``size``), clipped to 0-255: what the trainer evaluated on is what the artifacts serve.
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise ExportError(f"{{crop_fraction}} must be in (0, 1]; got {crop_fraction}.", "crop_fraction")
    return tf.clip_by_value(data_ops.center_crop_resize(image, size, crop_fraction), 0.0, 255.0)


def decode_and_center_crop(image_bytes, size: Tuple[int, int], crop_fraction: float = DEFAULT_CROP_FRACTION):
    """Encoded JPEG/PNG/GIF/BMP bytes -> float32 [h, w, 3] in 0-255 (grey and RGBA become RGB)."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    return center_crop_resize(image, size, crop_fraction)


def load_image_files(paths: Sequence, size: Tuple[int, int],
                     crop_fraction: float = DEFAULT_CROP_FRACTION) -> np.ndarray:
    """Reads image files into float32 [n, h, w, 3] (0-255); one-line error naming a bad file."""
    images, kept = _decode_files(paths, size, crop_fraction)
    if len(kept) < len(paths):
        bad = Path(paths[sorted(set(range(len(paths))) - set(kept))[0]])
        raise ExportError(f"{bad}: cannot decode image (corrupt, or not JPEG/PNG/GIF/BMP): "
                          f"{_decode_error(bad, size, crop_fraction)}")
    return images


def _decode_files(paths: Sequence, size, crop_fraction) -> Tuple[np.ndarray, List[int]]:
    """Decodes the files that decode; returns their images and their indices in ``paths``."""
    size = (int(size[0]), int(size[1]))
    if not len(paths):
        raise ExportError("no image files given.")
    contents = []
    for path in map(Path, paths):
        if not path.is_file():
            raise ExportError(f"{path}: no such image file.")
        contents.append(path.read_bytes())
    dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(contents), dtype=tf.int64),
                                                  tf.constant(contents, tf.string)))
    dataset = dataset.map(lambda i, data: (i, decode_and_center_crop(data, size, crop_fraction)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    indices, images = [], []
    for batch_indices, batch_images in dataset.batch(64):
        indices += batch_indices.numpy().tolist()
        images.append(batch_images.numpy())
    images_np = np.concatenate(images).astype(np.float32) if images else np.zeros([0, *size, 3], np.float32)
    return images_np, indices


def _decode_error(path: Path, size, crop_fraction) -> str:
    try:
        decode_and_center_crop(path.read_bytes(), size, crop_fraction)
    except (tf.errors.OpError, ValueError) as error:
        text = re.sub(r"\{\{[^}]*\}\}", "", str(error)).strip()  # drop TF's {{function_node ...}}
        return text.splitlines()[0][:120].rstrip(". ") if text else "decode failed"
    return "decode failed"


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


def folder_root(data) -> Optional[Path]:
    """The image folder ``data`` names (a path or a ``folder:PATH`` spec), else None."""
    spec = str(data)
    spec = spec[len(FOLDER_PREFIX):] if spec.startswith(FOLDER_PREFIX) else spec
    path = Path(spec).expanduser()
    return path if path.is_dir() or str(data).startswith(FOLDER_PREFIX) else None


def sample_folder(data_dir, size, count: Optional[int] = None, split: str = "test", seed: int = 0,
                  crop_fraction: float = DEFAULT_CROP_FRACTION) -> ImageBatch:
    """A class-balanced, seeded sample of one split of an image folder (all of it when
    ``count`` is None); files that do not decode are skipped, as the data package does."""
    from effv2_keras.data.folder import list_folder

    try:
        listing = list_folder(str(data_dir))
    except (ValueError, FileNotFoundError) as error:
        raise ExportError(f"cannot list image folder {data_dir}: {error}") from None
    name = next((s for s in SPLIT_FALLBACKS.get(split, (split,)) if s in listing.splits), None)
    if name is None and list(listing.splits) == ["train"] and split in SPLIT_FALLBACKS:
        name = "train"  # an unsplit folder: every split is the folder itself
    if name is None:
        raise ExportError(f"{data_dir} has no {split!r} split (it has {', '.join(sorted(listing.splits))}).")
    files, labels = listing.splits[name]
    picked = _balanced(files, labels, len(listing.class_names), seed)
    picked = picked[:count] if count else picked
    paths = [files[i] for i in picked]
    images, kept = _decode_files(paths, size, crop_fraction)
    if not kept:
        raise ExportError(f"{data_dir}: none of the {len(paths)} sampled {name} files decodes as an image.")
    if len(kept) < len(paths):
        logging.warning("%s: skipped %d of %d sampled files that do not decode as images.",
                        data_dir, len(paths) - len(kept), len(paths))
    return ImageBatch(images, labels[[picked[i] for i in kept]], listing.class_names,
                      [paths[i] for i in kept])


def _balanced(files: List[str], labels: np.ndarray, num_classes: int, seed: int) -> List[int]:
    """File indices round-robin over the classes (each class shuffled by ``seed``)."""
    rng = random.Random(seed)
    per_class = []
    for label in range(num_classes):
        indices = [i for i in range(len(files)) if labels[i] == label]
        rng.shuffle(indices)
        per_class.append(indices)
    depth = max((len(p) for p in per_class), default=0)
    return [p[i] for i in range(depth) for p in per_class if i < len(p)]


def load_split(data, size, split: str = "test", count: Optional[int] = None, seed: int = 0,
               batch_size: int = 32, crop_fraction: float = DEFAULT_CROP_FRACTION) -> ImageBatch:
    """Real images (and labels) of one split of ``data``.

    ``data`` is a folder of class folders (split into train/val/test or not; a path or
    ``folder:PATH``), read by ``sample_folder``, or any other ``effv2_keras.data.load``
    spec (``digits``, ``tfds:NAME``). The split falls back test -> val when absent;
    images are center-cropped as the data package evaluates.
    """
    root = folder_root(data)
    if root is not None:
        return sample_folder(root, size, count, split, seed, crop_fraction)
    return _load_spec(data, size, split, count, seed, batch_size, crop_fraction)


def _load_spec(data, size, split, count, seed, batch_size, crop_fraction) -> ImageBatch:
    from effv2_keras.data import load, make_pipeline

    try:
        splits = load(str(data))
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
