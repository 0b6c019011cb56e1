"""from_numpy (shapes, dtypes, label checks, carving) and the embedded digits set."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from effv2_keras import data


def _arrays(source):
    pairs = list(source.dataset.as_numpy_iterator())
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def test_from_numpy_gray_and_float_inputs():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, [12, 6, 5]).astype(np.float64)
    gray[0, 0, 0] = 254.6  # rounds to 255
    labels = np.arange(12) % 3
    splits = data.from_numpy(gray, labels, x_test=gray[:4, ..., None].astype(np.uint8), y_test=labels[:4],
                             class_names=["x", "y", "z"], val_fraction=0.0)
    images, got = _arrays(splits.train)
    assert images.dtype == np.uint8 and images.shape == (12, 6, 5, 3)
    np.testing.assert_array_equal(images[..., 0], np.rint(gray).astype(np.uint8))
    np.testing.assert_array_equal(images[..., 1], images[..., 2])
    assert images[0, 0, 0, 0] == 255
    np.testing.assert_array_equal(got, labels)
    assert got.dtype == np.int64 and splits.val is None and splits.num_classes == 3
    test_images, _ = _arrays(splits.test)
    assert test_images.shape == (4, 6, 5, 3)


def test_from_numpy_carves_a_stratified_seeded_val():
    x = np.arange(40, dtype=np.uint8)[:, None, None, None] * np.ones([1, 4, 4, 3], np.uint8)
    y = np.repeat([0, 1], 20)
    first = data.from_numpy(x, y, val_fraction=0.25, seed=7)
    again = data.from_numpy(x, y, val_fraction=0.25, seed=7)
    other = data.from_numpy(x, y, val_fraction=0.25, seed=8)
    ids = lambda source: sorted(int(image[0, 0, 0]) for image, _ in source.dataset.as_numpy_iterator())  # noqa: E731
    val, train = ids(first.val), ids(first.train)
    assert len(val) == 10 and Counter(v >= 20 for v in val) == Counter({False: 5, True: 5})
    assert sorted(val + train) == list(range(40))
    assert ids(again.val) == val and ids(other.val) != val
    assert first.class_names == ["0", "1"]


@pytest.mark.parametrize("labels, match", [
    (np.array([0, 1, 2, 3]), r"labels must be in \[0, 3\).*from 0 to 3"),
    (np.array([0, 1, -1, 2]), r"labels must be in \[0, 3\).*from -1 to 2"),
    (np.array([0, 1, 1.5, 2]), "integer class ids"),
])
def test_from_numpy_rejects_labels_out_of_range(labels, match):
    with pytest.raises(ValueError, match=match):
        data.from_numpy(np.zeros([4, 8, 8], np.uint8), labels, class_names=["a", "b", "c"])


def test_from_numpy_rejects_bad_inputs(caplog):
    x = np.zeros([4, 8, 8, 3], np.uint8)
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"x_val and y_val"):
        data.from_numpy(x, y, x_val=x)
    with pytest.raises(ValueError, match=r"4 images but y_train has 3"):
        data.from_numpy(x, y[:3])
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        data.from_numpy(np.zeros([4, 8, 8, 4]), y)
    with pytest.raises(ValueError, match="0-255"):
        data.from_numpy(np.full([4, 8, 8], -1.0), y)
    with pytest.raises(ValueError, match="0-255"):
        data.from_numpy(np.full([4, 8, 8], np.nan), y)
    with pytest.raises(ValueError, match=r"y_test: labels must be in \[0, 2\)"):
        data.from_numpy(x, y, x_test=x, y_test=np.array([0, 1, 2, 0]), class_names=["a", "b"])
    with pytest.raises(ValueError, match="at least 2 classes"):
        data.from_numpy(x, np.zeros(4, int))
    with caplog.at_level(logging.WARNING, logger="effv2_keras.data"):
        data.from_numpy(np.full([4, 8, 8], 0.5), y, val_fraction=0.0)
    assert "look like [0, 1] data" in caplog.text


def test_digits_offline_sizes_and_fixed_test_split():
    splits = data.load("digits")
    n_train, n_val, n_test = (s.num_examples for s in (splits.train, splits.val, splits.test))
    assert splits.class_names == [str(i) for i in range(10)] and splits.skipped_files == 0
    # Per class: round(0.2 * n_c) to test, then round(0.1 * rest) to val (sizes independent of the seed).
    assert (n_train, n_val, n_test) == (1295, 143, 359)
    train_images, train_labels = _arrays(splits.train)
    test_images, test_labels = _arrays(splits.test)
    assert train_images.shape[1:] == (32, 32, 3) and train_images.dtype == np.uint8
    assert train_images.min() == 0 and train_images.max() == 255  # 0-16 intensities mapped to 0-255
    np.testing.assert_array_equal(train_images[..., 0], train_images[..., 2])  # gray as RGB
    assert sorted(Counter(test_labels.tolist()).values()) == [35, 35] + [36] * 7 + [37]  # stratified

    # The held-out test split does not depend on the seed; validation does.
    reseeded = data.load("digits", seed=5)
    np.testing.assert_array_equal(_arrays(reseeded.test)[0], test_images)
    assert not np.array_equal(_arrays(reseeded.val)[0], _arrays(splits.val)[0])

    # Train, val and test partition the 1,797 digits exactly (as a multiset of images).
    all_images, _ = data.digits_arrays()
    union = np.concatenate([train_images, _arrays(splits.val)[0], test_images])
    key = lambda images: sorted(image.tobytes() for image in images)  # noqa: E731
    assert key(union) == key(all_images)
