"""TFDS sources: a real prepared data set written offline, mock_data, and the fast not-prepared error."""

from __future__ import annotations

import time

import numpy as np
import pytest

from effv2_keras import data

tfds = pytest.importorskip("tensorflow_datasets")


class TinyShades(tfds.core.GeneratorBasedBuilder):
    """20 train + 6 test grayscale images of varying width; pixel value = 40 + 150 * label + index."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 1)),
                "label": tfds.features.ClassLabel(names=["dark", "light"]),
            }),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(20), "test": self._generate_examples(6)}

    def _generate_examples(self, n):
        for i in range(n):
            label = i % 2
            yield i, {"image": np.full([12, 10 + i % 3, 1], 40 + 150 * label + i, np.uint8), "label": label}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A genuinely prepared tfds data set (no network: the generator makes the images)."""
    root = tmp_path_factory.mktemp("tfds")
    TinyShades(data_dir=str(root)).download_and_prepare()
    return str(root)


def _pixels(source):
    return sorted((int(image[0, 0, 0]), int(label)) for image, label in source.dataset.as_numpy_iterator())


def test_prepared_dataset_loads_and_carves_a_seeded_val(tiny_dir):
    splits = data.load("tfds:tiny_shades", data_dir=tiny_dir, val_fraction=0.25, seed=0)
    assert splits.class_names == ["dark", "light"] and splits.skipped_files == 0
    assert (splits.train.num_examples, splits.val.num_examples, splits.test.num_examples) == (15, 5, 6)
    train, val = _pixels(splits.train), _pixels(splits.val)
    assert len(train) == 15 and len(val) == 5 and len(_pixels(splits.test)) == 6
    # Every train example lands in exactly one of train / val; labels stay attached to their images.
    expected = sorted((40 + 150 * (i % 2) + i, i % 2) for i in range(20))
    assert sorted(train + val) == expected
    assert _pixels(data.load("tfds:tiny_shades", data_dir=tiny_dir, val_fraction=0.25, seed=0).val) == val
    assert _pixels(data.load("tfds:tiny_shades", data_dir=tiny_dir, val_fraction=0.25, seed=3).val) != val
    image, label = next(iter(splits.test.dataset))
    assert image.dtype.name == "uint8" and image.shape[0] == 12 and image.shape[-1] == 3  # gray -> RGB
    assert np.all(image.numpy() == image.numpy()[..., :1])
    for source in (splits.train, splits.val, splits.test):
        assert len(source.dataset) == source.num_examples


def test_prepared_dataset_without_val(tiny_dir):
    splits = data.load("tfds:tiny_shades", data_dir=tiny_dir, val_fraction=0.0)
    assert splits.val is None and splits.train.num_examples == 20


def test_mock_data_mnist_offline(tmp_path):
    with tfds.testing.mock_data(num_examples=20):
        splits = data.load("tfds:mnist", data_dir=str(tmp_path), val_fraction=0.1, seed=0)
        assert splits.class_names == [str(i) for i in range(10)]
        assert (splits.train.num_examples, splits.val.num_examples, splits.test.num_examples) == (18, 2, 20)
        images = [image for image, label in splits.train.dataset.as_numpy_iterator()]
        labels = [label for image, label in splits.train.dataset.as_numpy_iterator()]
    assert len(images) == 18
    assert all(image.shape == (28, 28, 3) and image.dtype == np.uint8 for image in images)
    assert all(0 <= label < 10 for label in labels)


def test_not_prepared_fails_fast_without_download(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"tfds:mnist is not prepared.*never downloads"):
        data.load("tfds:mnist", data_dir=str(tmp_path / "empty"))
    assert time.perf_counter() - start < 10.0  # download_and_prepare would retry for minutes offline
    assert not (tmp_path / "empty" / "downloads").exists()


def test_unknown_name_and_config_are_clear_errors(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="no data set named 'no_such_dataset_xyz'"):
        data.load("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="tfds:mnist:bogus"):
        data.load("tfds:mnist:bogus", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 10.0
