"""make_pipeline: shapes, dtypes, ranges, one-hot labels, crops, determinism, hooks; measure_throughput."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf

from effv2_keras import data

N, HEIGHT, WIDTH = 37, 48, 64


@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, [N, HEIGHT, WIDTH, 3], dtype=np.uint8)


@pytest.fixture(scope="module")
def unique_source(photos):
    """37 non-square images, label i for image i (37 classes), so a label identifies its image."""
    return data.from_numpy(photos, np.arange(N), val_fraction=0.0).train


@pytest.fixture(scope="module")
def five_class_source(photos):
    return data.from_numpy(photos, np.arange(N) % 5, val_fraction=0.0).train


def _batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("size", [32, 56])
def test_shapes_dtypes_ranges_and_one_hot(five_class_source, training, size):
    dataset = data.make_pipeline(five_class_source, size, batch_size=8, num_classes=5, training=training)
    images_spec, labels_spec = dataset.element_spec
    assert images_spec.dtype == tf.float32 and labels_spec.dtype == tf.float32
    assert tuple(images_spec.shape) == ((8 if training else None), size, size, 3)
    batches = _batches(dataset)
    # Training drops the short last batch (37 = 4 * 8 + 5); evaluation keeps every example.
    assert [len(x) for x, _ in batches] == ([8] * 4 if training else [8] * 4 + [5])
    assert len(dataset) == len(batches)
    for images, labels in batches:
        assert images.shape[1:] == (size, size, 3) and labels.shape[1] == 5
        assert images.min() >= 0.0 and images.max() <= 255.0 and images.max() > 200.0  # 0-255, not 0-1
        np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
        assert set(np.unique(labels)) <= {0.0, 1.0}
    all_labels = np.concatenate([y for _, y in batches]).argmax(axis=1)
    if not training:  # evaluation keeps the source order
        np.testing.assert_array_equal(all_labels, np.arange(N) % 5)


def test_eval_is_the_center_crop_op(unique_source, photos):
    images, labels = next(iter(data.make_pipeline(unique_source, 40, 37, N, training=False)))
    expected = np.stack([data.center_crop_resize(p, 40).numpy() for p in photos])
    np.testing.assert_allclose(images.numpy(), expected, atol=1e-3)
    np.testing.assert_array_equal(labels.numpy(), np.eye(N, dtype=np.float32))


@pytest.mark.parametrize("flip", [False, True])
def test_training_flip_option(unique_source, photos, flip):
    # scale (1, 1): the only box covering the whole area is the image itself, so the crop is the
    # resized image and what remains to see is the flip.
    dataset = data.make_pipeline(unique_source, 24, 37, N, training=True, flip=flip, crop_scale=(1.0, 1.0),
                                 crop_ratio=(0.5, 2.0))
    images, labels = (t.numpy() for t in next(iter(dataset)))
    index = labels.argmax(axis=1)
    assert sorted(index) == list(range(N))  # one epoch, every image once
    assert not np.array_equal(index, np.arange(N))  # shuffled
    plain = np.stack([data.resize(photos[i], 24).numpy() for i in index])
    same = [np.allclose(a, b, atol=1e-3) for a, b in zip(images, plain)]
    mirrored = [np.allclose(a, b[:, ::-1], atol=1e-3) for a, b in zip(images, plain)]
    if flip:
        assert all(s or m for s, m in zip(same, mirrored))
        assert 5 <= sum(mirrored) <= 32  # binomial(37, 1/2), outside: probability < 1e-4
    else:
        assert all(same)


def test_training_is_seeded_and_epochs_differ(five_class_source):
    def first_epoch(seed):
        return _batches(data.make_pipeline(five_class_source, 32, 8, 5, training=True, seed=seed))

    a, b, c = first_epoch(1), first_epoch(1), first_epoch(2)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])
    dataset = data.make_pipeline(five_class_source, 32, 8, 5, training=True, seed=1)
    epoch1, epoch2 = _batches(dataset), _batches(dataset)
    assert not np.array_equal(epoch1[0][0], epoch2[0][0])  # reshuffled and re-cropped each epoch
    repeated = _batches(dataset.repeat(2))  # the trainer's infinite stream: each pass differs too
    assert len(repeated) == 8 and not np.array_equal(repeated[0][0], repeated[4][0])
    unseeded = data.make_pipeline(five_class_source, 32, 8, 5, training=True, seed=None)
    assert len(_batches(unseeded)) == 4


def test_augment_hooks_are_applied(unique_source):
    traced = []

    def invert(image):
        traced.append((tuple(image.shape), image.dtype))
        return 255.0 - image

    def halve_and_smooth(images, labels):
        traced.append((tuple(images.shape[1:]), tuple(labels.shape[1:])))
        return images * 0.5, labels * 0.9 + 0.1 / N

    plain = next(iter(data.make_pipeline(unique_source, 32, 16, N, training=False)))
    hooked = next(iter(data.make_pipeline(unique_source, 32, 16, N, training=False, image_augment=invert,
                                          batch_augment=halve_and_smooth)))
    assert ((32, 32, 3), tf.float32) in traced and ((32, 32, 3), (N,)) in traced
    np.testing.assert_allclose(hooked[0].numpy(), (255.0 - plain[0].numpy()) * 0.5, atol=1e-3)
    labels = hooked[1].numpy()
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(labels.max(axis=1), 0.9 + 0.1 / N, rtol=1e-6)
    # Training: image_augment runs inside the parallel map, after crop and flip.
    train = data.make_pipeline(unique_source, 32, 8, N, training=True, image_augment=lambda x: x * 0.0 + 7.0)
    np.testing.assert_array_equal(next(iter(train))[0].numpy(), 7.0)
    # Out-of-range augment output is clipped back to 0-255.
    clipped = data.make_pipeline(unique_source, 32, 8, N, training=True, image_augment=lambda x: x * 4.0 - 300.0)
    images = next(iter(clipped))[0].numpy()
    assert images.min() == 0.0 and images.max() == 255.0


def test_labels_outside_num_classes_fail_loudly(five_class_source):
    dataset = data.make_pipeline(five_class_source, 16, 8, num_classes=3, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        _batches(dataset)


def test_small_split_keeps_its_only_batch(photos):
    source = data.from_numpy(photos[:5], np.arange(5) % 2, val_fraction=0.0).train
    batches = _batches(data.make_pipeline(source, 16, 8, 2, training=True))
    assert [len(x) for x, _ in batches] == [5]
    assert _batches(data.make_pipeline(source, 16, 8, 2, training=True, drop_remainder=True)) == []


def test_real_photos_train_and_eval(signdigits):
    for training, size in ((True, 64), (False, 96)):
        dataset = data.make_pipeline(signdigits.train, size, 16, signdigits.num_classes, training=training,
                                     flip=False)
        assert len(dataset) == (signdigits.train.num_examples // 16 if training
                                else -(-signdigits.train.num_examples // 16))
        for images, labels in dataset.take(2):
            assert images.shape == (16, size, size, 3)
            assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
            np.testing.assert_array_equal(labels.numpy().sum(axis=1), 1.0)
        assert data.measure_throughput(dataset, batches=3, warmup=1) > 0.0


def test_measure_throughput_matches_a_known_rate():
    delay, per_batch = 0.05, 4

    def slow(x):
        time.sleep(delay)
        return x

    dataset = tf.data.Dataset.range(12 * per_batch).batch(per_batch).map(
        lambda x: tf.py_function(slow, [x], tf.int64))
    rate = data.measure_throughput(dataset, batches=8, warmup=1)
    # At most per_batch / delay = 80 images/s (sequential sleeps); a busy machine may be slower.
    assert 20.0 < rate <= per_batch / delay * 1.02
    with pytest.raises(ValueError, match="no batch"):
        data.measure_throughput(tf.data.Dataset.range(2).batch(1), batches=3, warmup=2)
