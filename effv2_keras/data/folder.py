"""Image folders: ``ROOT/<class>/<file>`` or ``ROOT/{train,val,test}/<class>/<file>``.

Layout. If ROOT has a ``train/`` folder, it and the optional ``val/`` (or
``validation/``) and ``test/`` folders are the splits; otherwise ROOT itself is
the train set. Class names are the train split's sub-folder names, sorted;
val/test may lack a class but may not add one. Files are found recursively
inside each class folder; hidden files and folders (``.*``) are ignored.
Without a validation folder a stratified, seeded slice of ``val_fraction``
of train is carved out (by file, before decoding). Test is never touched for
that.

Decoding and unreadable files. Every split is decoded once, at load, by
``tf.io.decode_image(channels=3, expand_animations=False)`` in a parallel
tf.data map: JPEG, PNG, BMP, GIF (first frame) and WebP, grayscale and RGBA
coming out RGB. Each element carries its file index; ``ignore_errors()``
drops the elements whose read or decode fails (empty, truncated or corrupt
files, text or other non-image files, whatever their extension), the
survivors are cached (memory, or a file under ``cache_dir``), and one pass
over the cached indices both fills the cache and tells exactly which files
were dropped. The decoder that validates a file is the one that feeds the
model, so "valid" cannot disagree between a checker (e.g. PIL) and TF, and
no file is read twice. The dropped files are counted in
``DatasetSplits.skipped_files`` and named (the first few) in one warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from effv2_keras.data.core import (DatasetSplits, ImageSource, check_val_fraction, log_skipped,
                                   stratified_split, typical_image_size, with_cardinality)

VAL_FOLDERS = ("val", "validation")


def load_folder(root: str, val_fraction: float = 0.1, seed: int = 0,
                cache_dir: Optional[str] = None) -> DatasetSplits:
    """Loads an image-folder data set (see the module docstring for the layout)."""
    val_fraction = check_val_fraction(val_fraction)
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root} does not exist")
    split_dirs = _split_dirs(root)
    class_names = _class_folders(split_dirs["train"])
    if len(class_names) < 2:
        raise ValueError(f"{split_dirs['train']} has {len(class_names)} class folder(s) "
                         f"{class_names}: a classification data set needs at least 2")

    listed: Dict[str, Tuple[List[str], np.ndarray]] = {}
    for split, folder in split_dirs.items():
        if folder is not None:
            listed[split] = _list_files(folder, class_names)

    if split_dirs["val"] is None and val_fraction > 0:
        files, labels = listed["train"]
        keep, take = stratified_split(labels, val_fraction, seed)
        if len(take):
            listed["train"] = ([files[i] for i in keep], labels[keep])
            listed["val"] = ([files[i] for i in take], labels[take])

    sources: Dict[str, Optional[ImageSource]] = {"train": None, "val": None, "test": None}
    skipped: List[str] = []
    total = 0
    for split, (files, labels) in listed.items():
        source, bad = _decode_split(files, labels, cache_dir, split)
        sources[split] = source
        skipped += bad
        total += len(files)
        if split == "train":
            _check_every_class_readable(files, labels, bad, class_names, split_dirs["train"])
    log_skipped(root, [os.path.relpath(path, root) for path in skipped], total)
    return DatasetSplits(train=sources["train"], val=sources["val"], test=sources["test"],
                         class_names=class_names, skipped_files=len(skipped),
                         image_size=typical_image_size(listed["train"][0], seed))


@dataclasses.dataclass(frozen=True)
class FolderFiles:
    """The files of an image folder as ``load_folder`` lists them, nothing decoded.

    ``splits`` maps each split folder present ("train", "val", "test"; an unsplit
    folder is all "train") to its (sorted files, int64 labels); labels index
    ``class_names``, the train split's class folders. No validation slice is carved.
    """

    root: str
    class_names: List[str]
    splits: Dict[str, Tuple[List[str], np.ndarray]]


def list_folder(root: str) -> FolderFiles:
    """Lists an image folder (layout and rules of the module docstring) without decoding it.

    For readers that need a few files of a split, not the decoded data set (export's
    calibration and verification samples).

        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> for split, name in [("train", "cat"), ("train", "dog"), ("test", "dog")]:
        ...     os.makedirs(os.path.join(root, split, name))
        ...     open(os.path.join(root, split, name, "1.jpg"), "wb").close()
        >>> listing = list_folder(root)
        >>> listing.class_names, sorted(listing.splits), listing.splits["test"][1].tolist()
        (['cat', 'dog'], ['test', 'train'], [1])
    """
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root} does not exist")
    split_dirs = _split_dirs(root)
    class_names = _class_folders(split_dirs["train"])
    splits = {split: _list_files(folder, class_names)
              for split, folder in split_dirs.items() if folder is not None}
    return FolderFiles(root=root, class_names=class_names, splits=splits)


def _split_dirs(root: str) -> Dict[str, Optional[str]]:
    def sub(name):
        path = os.path.join(root, name)
        return path if os.path.isdir(path) else None

    if sub("train") is None:
        return {"train": root, "val": None, "test": None}
    val = next((sub(name) for name in VAL_FOLDERS if sub(name)), None)
    return {"train": sub("train"), "val": val, "test": sub("test")}


def _class_folders(folder: str) -> List[str]:
    return sorted(entry.name for entry in os.scandir(folder)
                  if entry.is_dir() and not entry.name.startswith("."))


def _list_files(split_dir: str, class_names: List[str]) -> Tuple[List[str], np.ndarray]:
    """All non-hidden files under each class folder of one split, sorted, with their labels."""
    present = _class_folders(split_dir)
    unknown = sorted(set(present) - set(class_names))
    if unknown:
        raise ValueError(f"{split_dir} has class folders {unknown} that the train split "
                         f"does not have (train classes: {class_names})")
    files, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):  # val/test may lack a class
            continue
        found = []
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
        if not found:
            raise ValueError(f"class folder {class_dir} is empty: remove it or add images")
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(f"split folder {split_dir} has no class folders")
    return files, np.asarray(labels, np.int64)


def _decode_split(files: List[str], labels: np.ndarray, cache_dir: Optional[str],
                  split: str) -> Tuple[ImageSource, List[str]]:
    """Decodes one split once; returns the cached source and the files that failed."""
    indices = np.arange(len(files), dtype=np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((indices, tf.constant(files, tf.string), labels))
    dataset = dataset.map(_read_and_decode, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.ignore_errors()
    dataset = dataset.cache(_cache_file(cache_dir, split, files, labels) if cache_dir else "")
    # The one decoding pass: fills the cache and names the survivors.
    kept = [batch for batch in dataset.map(_index_of).batch(65536).as_numpy_iterator()]
    kept = np.concatenate(kept) if kept else np.zeros([0], np.int64)
    bad = [files[i] for i in np.setdiff1d(indices, kept)]
    dataset = with_cardinality(dataset.map(_drop_index), len(kept))
    return ImageSource(dataset=dataset, num_examples=len(kept)), bad


def _read_and_decode(index, path, label):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return index, tf.ensure_shape(image, [None, None, 3]), label


def _index_of(index, image, label):
    return index


def _drop_index(index, image, label):
    return image, label


def _cache_file(cache_dir: str, split: str, files: List[str], labels: np.ndarray) -> str:
    """A cache file name that changes whenever the split's files, sizes, dates or labels do."""
    digest = hashlib.sha1()
    for path, label in zip(files, labels):
        stat = os.stat(path)
        digest.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    os.makedirs(cache_dir, exist_ok=True)
    return os.path.join(cache_dir, f"folder-{split}-{digest.hexdigest()[:16]}")


def _check_every_class_readable(files, labels, bad, class_names, train_dir):
    bad = set(bad)
    readable = np.bincount([lab for f, lab in zip(files, labels) if f not in bad], minlength=len(class_names))
    empty = [class_names[c] for c in np.flatnonzero(readable == 0)]
    if empty:
        raise ValueError(f"no readable image in the train split of class folder(s) "
                         f"{[os.path.join(train_dir, name) for name in empty]}")
