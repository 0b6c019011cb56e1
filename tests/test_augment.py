"""Tests for effv2_keras.augment: RandAugment ops, Mixup, CutMix, label smoothing.

Real photos come from the shared clothing160 set (../shared/data next to the repo);
tests that need them skip when it is absent.
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from effv2_keras import augment as A
from effv2_keras.augment import (
    make_batch_augmenter,
    make_image_augmenter,
    smooth_labels,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clothing160"


def _real_images(n):
    files = sorted((DATA / "train").glob("*/*.jpg"))
    if not files:
        pytest.skip(f"real photos not found under {DATA} (shared data folder absent)")
    step = max(1, len(files) // n)  # spread over the classes
    return [np.asarray(Image.open(f).convert("RGB")) for f in files[::step][:n]]


@pytest.fixture(scope="module")
def photos():
    return _real_images(8)


def _random_image(h=48, w=40, seed=0):
    return tf.random.stateless_uniform([h, w, 3], seed=[seed, 1], maxval=255.0)


# --- RandAugment ---------------------------------------------------------------


@pytest.mark.parametrize("magnitude,num_ops", [(0, 2), (0.0, 2), (None, 2), (10, 0)])
def test_magnitude_zero_is_identity(magnitude, num_ops):
    image = _random_image()
    augment = make_image_augmenter(magnitude, num_ops=num_ops, seed=1)
    assert augment(image) is image


def test_probability_zero_is_identity():
    image = _random_image()
    assert make_image_augmenter(10, seed=1, probability=0.0)(image) is image


@pytest.mark.parametrize("probability", [0.25, 0.75])
def test_probability_is_the_fraction_of_images_augmented(probability):
    # 400 images: the binomial standard deviation of the fraction is at most 0.025, so a
    # 0.1 tolerance is 4 sigma. At magnitude 10 every op changes a random image (even the
    # no-magnitude ones: Invert, Equalize, AutoContrast), so "changed" means "augmented".
    augment = make_image_augmenter(10, num_ops=2, seed=0, probability=probability)
    changed = 0
    for i in range(400):
        image = _random_image(16, 16, seed=i)
        changed += int(not np.array_equal(augment(image).numpy(), image.numpy()))
    assert abs(changed / 400 - probability) < 0.1


@pytest.mark.parametrize("probability", [-0.1, 1.5, True])
def test_bad_probability_is_rejected(probability):
    with pytest.raises(ValueError, match="probability"):
        make_image_augmenter(10, probability=probability)


@pytest.mark.parametrize("dtype", [tf.float32, tf.uint8])
def test_dtype_shape_and_range_preserved(dtype):
    augment = make_image_augmenter(15, seed=3)
    for i in range(8):
        image = tf.cast(_random_image(37, 53, seed=i), dtype)
        out = augment(image)
        assert out.dtype == dtype and out.shape == image.shape
        values = out.numpy().astype(np.float64)
        assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 255


@pytest.mark.parametrize("name", A.RANDAUGMENT_OPS)
@pytest.mark.parametrize("magnitude", [1.0, 15.0, 30.0])
def test_every_op_keeps_shape_and_range(name, magnitude):
    image = _random_image(31, 45)
    out = A.apply_op(name, image, magnitude, seed=(4, 2)).numpy()
    assert out.shape == (31, 45, 3) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 255


def test_higher_magnitude_changes_real_images_more(photos):
    # Mean absolute pixel change of the full RandAugment (2 ops), over many draws.
    def mean_change(magnitude):
        total = []
        for k, photo in enumerate(photos):
            image = tf.constant(photo, tf.float32)
            augment = make_image_augmenter(magnitude, seed=100 + k)
            total += [float(tf.reduce_mean(tf.abs(augment(image) - image))) for _ in range(8)]
        return np.mean(total)

    low, high = mean_change(5), mean_change(15)
    assert high > 1.2 * low, (low, high)


_MAGNITUDE_OPS = ["Rotate", "Posterize", "Solarize", "Color", "Contrast", "Brightness",
                  "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout",
                  "SolarizeAdd"]
_ENHANCE_OPS = ["Color", "Contrast", "Brightness", "Sharpness"]


@pytest.mark.parametrize("name", _MAGNITUDE_OPS)
def test_each_op_is_stronger_at_higher_magnitude(name, photos):
    def change(magnitude):
        diffs = []
        for k, photo in enumerate(photos):
            image = tf.constant(photo, tf.float32)
            for s in range(2):
                out = A.apply_op(name, image, magnitude, seed=(k, s))
                diffs.append(float(tf.reduce_mean(tf.abs(out - image))))
        return np.mean(diffs)

    assert change(15) > change(5)  # Table 6's range
    if name not in _ENHANCE_OPS:  # the official enhance factor is 1 (identity) at m = 5
        assert change(5) > change(1)


@pytest.mark.parametrize("name", _ENHANCE_OPS)
def test_enhance_ops_are_identity_at_magnitude_5(name):
    image = _random_image()
    out = A.apply_op(name, image, 5.0)  # factor 0.1 + 0.18 * 5 = 1
    np.testing.assert_allclose(out.numpy(), image.numpy(), atol=1e-3)


def _pil(photo):
    return Image.fromarray(photo[:96, :80])


@pytest.mark.parametrize("name,pil_fn,tol", [
    ("Equalize", ImageOps.equalize, 0),
    ("AutoContrast", ImageOps.autocontrast, 1),
    ("Invert", ImageOps.invert, 0),
])
def test_parameterless_ops_match_pil(name, pil_fn, tol, photos):
    for photo in photos[:4]:
        img = _pil(photo)
        ours = A.apply_op(name, np.asarray(img), 10).numpy()
        ref = np.asarray(pil_fn(img)).astype(np.float32)
        assert np.abs(ours - ref).max() <= tol, name


@pytest.mark.parametrize("magnitude", [0.0, 5.0, 10.0, 15.0])
def test_posterize_and_solarize_levels(magnitude, photos):
    img = _pil(photos[0])
    bits = max(1, 8 - int(magnitude * 0.4))  # 8, 6, 4, 2
    ours = A.apply_op("Posterize", np.asarray(img), magnitude).numpy()
    np.testing.assert_array_equal(ours, np.asarray(ImageOps.posterize(img, bits)))
    threshold = max(0, 256 - 25.6 * magnitude)  # 256, 128, 0, 0
    ours = A.apply_op("Solarize", np.asarray(img), magnitude).numpy()
    np.testing.assert_array_equal(ours, np.asarray(ImageOps.solarize(img, threshold)))


@pytest.mark.parametrize("name,enhancer", [
    ("Color", ImageEnhance.Color),
    ("Contrast", ImageEnhance.Contrast),
    ("Brightness", ImageEnhance.Brightness),
    ("Sharpness", ImageEnhance.Sharpness),
])
@pytest.mark.parametrize("magnitude", [2.0, 10.0])
def test_enhance_ops_match_pil(name, enhancer, magnitude, photos):
    # Official factor 0.1 + 0.18 m; PIL rounds to uint8 (and its Contrast/Color
    # round the gray level), so allow 2 levels.
    factor = 0.1 + 0.18 * magnitude
    for photo in photos[:3]:
        img = _pil(photo)
        ours = A.apply_op(name, np.asarray(img), magnitude).numpy()
        ref = np.asarray(enhancer(img).enhance(factor)).astype(np.float32)
        assert np.abs(ours - ref).max() <= 2.0, (name, np.abs(ours - ref).max())


def test_translate_is_capped_at_half_the_image():
    image = tf.ones([20, 30, 3]) * 200.0
    out = A.apply_op("TranslateX", image, 30.0, seed=(0, 0)).numpy()  # 300 px asked
    filled = np.mean(out == 128.0)
    assert filled == pytest.approx(0.5, abs=0.05)


def test_seeded_augmenters_are_reproducible():
    images = [_random_image(24, 24, seed=i) for i in range(6)]
    a, b, c = (make_image_augmenter(12, seed=s) for s in (7, 7, 8))
    outs_a = [a(x).numpy() for x in images]
    outs_b = [b(x).numpy() for x in images]
    outs_c = [c(x).numpy() for x in images]
    for x, y in zip(outs_a, outs_b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(outs_a, outs_c))
    # A per-call seed makes the result independent of the augmenter's state.
    d = make_image_augmenter(12)
    np.testing.assert_array_equal(d(images[0], [3, 4]).numpy(), a(images[0], [3, 4]).numpy())


def test_image_augmenter_inside_tf_data_with_dynamic_shapes():
    sizes = [(40, 56), (64, 48), (33, 33), (50, 70)]

    def gen():
        for i, (h, w) in enumerate(sizes):
            yield np.random.default_rng(i).uniform(0, 255, (h, w, 3)).astype(np.float32)

    ds = tf.data.Dataset.from_generator(
        gen, output_signature=tf.TensorSpec([None, None, 3], tf.float32))
    first = [o.numpy() for o in ds.map(make_image_augmenter(10, seed=5))]
    assert [o.shape for o in first] == [(h, w, 3) for h, w in sizes]
    assert all(o.dtype == np.float32 and 0 <= o.min() <= o.max() <= 255 for o in first)
    assert any(not np.array_equal(o, x) for o, x in zip(first, gen()))
    # A fresh augmenter with the same seed gives the same images (sequential map).
    second = [o.numpy() for o in ds.map(make_image_augmenter(10, seed=5))]
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)


def test_image_augmenter_in_parallel_map_on_decoded_photos():
    files = sorted((DATA / "train").glob("*/*.jpg"))[:6]
    if not files:
        pytest.skip(f"real photos not found under {DATA} (shared data folder absent)")
    augment = make_image_augmenter(15, seed=0)

    def load(path):
        image = tf.cast(tf.io.decode_jpeg(tf.io.read_file(path), channels=3), tf.float32)
        return augment(tf.image.resize(image, [64, 64]))

    ds = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
    out = np.stack(list(ds.map(load, num_parallel_calls=2)))
    assert out.shape == (6, 64, 64, 3) and out.min() >= 0 and out.max() <= 255


def test_image_augmenter_rejects_bad_arguments():
    with pytest.raises(ValueError, match="magnitude"):
        make_image_augmenter(-1)
    with pytest.raises(ValueError, match="num_ops"):
        make_image_augmenter(5, num_ops=-1)
    with pytest.raises(ValueError, match="one image"):
        make_image_augmenter(5)(tf.zeros([2, 8, 8, 3]))
    with pytest.raises(ValueError, match="Unknown op"):
        A.apply_op("Blur", tf.zeros([8, 8, 3]), 5)


# --- Mixup, CutMix, label smoothing ---------------------------------------------


def _batch(b=8, h=12, w=10, classes=None, seed=0):
    rng = np.random.default_rng(seed)
    # Distinct continuous values: a pixel equal to a source pixel came from it.
    images = rng.uniform(0, 255, (b, h, w, 3)).astype(np.float32)
    classes = b if classes is None else classes
    labels = np.eye(classes, dtype=np.float32)[np.arange(b) % classes]
    return images, labels


def _check_mixup_rows(out_x, out_y, x, y, rows, partner):
    for i in rows:
        j = partner(i)
        lam = out_y[i, i]  # row i has class i, partner class j != i
        if i == j:
            np.testing.assert_allclose(out_x[i], x[i], atol=1e-4)
            continue
        assert 0.5 <= lam <= 1.0
        assert out_y[i, j] == pytest.approx(1.0 - lam, abs=1e-6)
        np.testing.assert_allclose(out_x[i], lam * x[i] + (1 - lam) * x[j], atol=1e-3)
        lo, hi = np.minimum(x[i], x[j]), np.maximum(x[i], x[j])
        assert np.all(out_x[i] >= lo - 1e-3) and np.all(out_x[i] <= hi + 1e-3)


def _check_cutmix_rows(out_x, out_y, x, y, rows, partner):
    pasted_fractions = []
    for i in rows:
        j = partner(i)
        if i == j:
            np.testing.assert_array_equal(out_x[i], x[i])
            continue
        from_i = np.all(out_x[i] == x[i], axis=-1)
        from_j = np.all(out_x[i] == x[j], axis=-1)
        assert np.all(from_i ^ from_j), "every pixel comes from exactly one image"
        if from_j.any():  # the pasted region is one rectangle
            ys, xs = np.nonzero(from_j)
            assert from_j[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
        area = from_j.mean()
        assert out_y[i, j] == pytest.approx(area, abs=1e-6)
        assert out_y[i, i] == pytest.approx(1.0 - area, abs=1e-6)
        pasted_fractions.append(area)
    return pasted_fractions


def test_mixup_gives_convex_combinations():
    x, y = _batch(8)
    out_x, out_y = make_batch_augmenter(8, mixup_alpha=0.4, seed=0)(x, y)
    out_x, out_y = out_x.numpy(), out_y.numpy()
    np.testing.assert_allclose(out_y.sum(-1), 1.0, atol=1e-6)
    _check_mixup_rows(out_x, out_y, x, y, range(8), lambda i: 7 - i)


def test_mixup_weights_follow_beta():
    # alpha = 1: lam ~ U(0, 1), max(lam, 1 - lam) ~ U(0.5, 1), mean 0.75.
    x, y = _batch(1000, h=2, w=2, classes=2)
    x[:500] = 0.0
    x[500:] = 1.0
    out_x, _ = make_batch_augmenter(2, mixup_alpha=1.0, seed=3)(x, y)
    lam = 1.0 - out_x.numpy()[:500, 0, 0, 0]  # row i < 500 mixes 0 with 1
    assert lam.min() >= 0.5 and lam.mean() == pytest.approx(0.75, abs=0.03)


def test_cutmix_label_weight_is_pasted_area():
    x, y = _batch(8, h=16, w=20)
    fractions = []
    for seed in range(4):
        out_x, out_y = make_batch_augmenter(8, cutmix_alpha=1.0, seed=seed)(x, y)
        out_x, out_y = out_x.numpy(), out_y.numpy()
        np.testing.assert_allclose(out_y.sum(-1), 1.0, atol=1e-6)
        fractions += _check_cutmix_rows(out_x, out_y, x, y, range(8), lambda i: 7 - i)
    assert len(set(np.round(fractions, 4))) > 5 and max(fractions) > 0.1


def test_label_smoothing_values_are_exact():
    labels = np.eye(10, dtype=np.float32)[[3, 7]]
    smoothed = smooth_labels(labels, 0.1).numpy()
    expected = np.full((2, 10), 0.01, np.float32)
    expected[0, 3] = expected[1, 7] = 0.91
    np.testing.assert_allclose(smoothed, expected, rtol=0, atol=1e-7)
    x, _ = _batch(2, classes=10)
    _, out = make_batch_augmenter(10, label_smoothing=0.1)(x, np.array([3, 7]))  # integer ids
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-7)
    assert smooth_labels(labels, 0.0).numpy().tolist() == labels.tolist()


def test_mixing_then_smoothing_still_sums_to_one():
    x, y = _batch(6)
    _, out = make_batch_augmenter(6, 0.2, 1.0, label_smoothing=0.1, seed=1)(x, y)
    np.testing.assert_allclose(out.numpy().sum(-1), 1.0, atol=1e-6)
    assert out.numpy().min() >= 0.1 / 6 - 1e-7


@pytest.mark.parametrize("batch", [8, 7])
def test_both_on_splits_batch_half_and_half(batch):
    x, y = _batch(batch)
    n_mix = batch // 2
    augment = make_batch_augmenter(batch, mixup_alpha=1.0, cutmix_alpha=1.0, seed=2)
    for _ in range(3):
        out_x, out_y = (t.numpy() for t in augment(x, y))
        # First half: Mixup, paired within the half (row i with n_mix - 1 - i).
        _check_mixup_rows(out_x, out_y, x, y, range(n_mix), lambda i: n_mix - 1 - i)
        # Second half: CutMix, paired within the half.
        _check_cutmix_rows(out_x, out_y, x, y, range(n_mix, batch),
                           lambda i: n_mix + (batch - 1 - i))
        # No label mass crosses the halves.
        assert np.all(out_y[:n_mix, n_mix:] == 0) and np.all(out_y[n_mix:, :n_mix] == 0)


def test_alpha_zero_is_passthrough():
    x, y = _batch(4)
    out_x, out_y = make_batch_augmenter(4)(x, y)
    np.testing.assert_array_equal(out_x.numpy(), x)
    np.testing.assert_array_equal(out_y.numpy(), y)


def test_batch_augmenter_in_tf_data_with_dynamic_batch_size():
    x, _ = _batch(13, h=8, w=8)
    ids = np.arange(13) % 5
    ds = tf.data.Dataset.from_tensor_slices((x, ids)).batch(5)  # 5, 5, 3 (None batch dim)
    augment = make_batch_augmenter(5, mixup_alpha=0.2, cutmix_alpha=1.0, label_smoothing=0.1,
                                   seed=0)
    out = list(ds.map(augment))
    assert [tuple(i.shape) for i, _ in out] == [(5, 8, 8, 3), (5, 8, 8, 3), (3, 8, 8, 3)]
    assert all(lab.shape == (n, 5) for (_, lab), n in zip(out, (5, 5, 3)))
    for _, lab in out:
        np.testing.assert_allclose(lab.numpy().sum(-1), 1.0, atol=1e-6)
    again = list(ds.map(make_batch_augmenter(5, 0.2, 1.0, 0.1, seed=0)))
    for (a, b), (c, d) in zip(out, again):
        np.testing.assert_array_equal(a.numpy(), c.numpy())
        np.testing.assert_array_equal(b.numpy(), d.numpy())


def test_batch_augmenter_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        make_batch_augmenter(0)
    with pytest.raises(ValueError, match="mixup_alpha"):
        make_batch_augmenter(10, mixup_alpha=-0.1)
    with pytest.raises(ValueError, match="cutmix_alpha"):
        make_batch_augmenter(10, cutmix_alpha=float("inf"))
    with pytest.raises(ValueError, match="label_smoothing"):
        make_batch_augmenter(10, label_smoothing=1.5)
    with pytest.raises(ValueError, match="num_classes=10"):
        make_batch_augmenter(10)(np.zeros([2, 4, 4, 3], np.float32), np.eye(3)[:2])
