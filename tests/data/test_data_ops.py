"""Per-image ops, each eagerly and inside tf.data, checked on coordinate images.

A coordinate image stores its row index in channel 0 and its column index in
channel 1, so the output of a crop tells which input box it came from.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from effv2_keras import data


def coordinate_image(height: int, width: int) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)


def _in_tf_data(fn, images, seeds=None):
    """Runs fn over images (possibly different sizes) inside Dataset.map with unknown static shapes."""
    dataset = tf.data.Dataset.from_generator(lambda: iter(images),
                                             output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    if seeds is None:
        dataset = dataset.map(fn)
    else:
        dataset = tf.data.Dataset.zip(dataset, tf.data.Dataset.from_tensor_slices(seeds)).map(fn)
    return [x for x in dataset.as_numpy_iterator()]


def test_random_resized_crop_respects_scale_and_ratio():
    image = coordinate_image(200, 200)
    size, scale, ratio = 48, (0.25, 1.0), (3 / 4, 4 / 3)
    seeds = np.stack([np.arange(30), np.arange(30) * 7 + 1], axis=1)
    eager = [data.random_resized_crop(image, size, s, scale, ratio).numpy() for s in seeds]
    mapped = _in_tf_data(lambda x, s: data.random_resized_crop(x, size, s, scale, ratio), [image] * 30, seeds)
    areas = []
    for out, out_tf in zip(eager, mapped):
        assert out.shape == (size, size, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, out_tf, atol=1e-4)  # same seed, same crop in tf.data
        # Box extent from the coordinates seen. The resampling filter centres the first and last
        # output pixels half an output pixel (box/96 input pixels) inside the box, hence <= 1 + box/48.
        height = out[..., 0].max() - out[..., 0].min() + 1
        width = out[..., 1].max() - out[..., 1].min() + 1
        assert height <= 200 and width <= 200
        true_h, true_w = height * 48 / 47 + 1, width * 48 / 47 + 1  # upper bounds of the box sides
        assert true_h * true_w / 200**2 >= scale[0]
        assert ratio[0] * 0.93 <= width / height <= ratio[1] / 0.93
        areas.append(height * width / 200**2)
    assert min(areas) < 0.6 and max(areas) > 0.7  # the crops really vary
    again = data.random_resized_crop(image, size, seeds[3], scale, ratio).numpy()
    np.testing.assert_array_equal(again, eager[3])


def test_center_crop_resize_takes_the_central_box_of_each_side():
    # 100x200 (aspect 2) at crop 0.5: the central 50x100 box is wider than 4/3, so its width is
    # cut to 66 (50 * 4/3): rows 25..74, columns 67..132, squeezed to 50x50.
    image = coordinate_image(100, 200)
    out = data.center_crop_resize(image, 50, crop_fraction=0.5).numpy()
    np.testing.assert_allclose(out[..., 0], np.repeat(np.arange(25, 75)[:, None], 50, axis=1), atol=1e-4)
    assert 66.5 < out[..., 1].min() < 68.5 and 131 < out[..., 1].max() < 133
    # A portrait within 4/3 of square (213x160, as clothing160) is kept whole at crop 1.0.
    portrait = coordinate_image(213, 160)
    whole = data.center_crop_resize(portrait, 40, crop_fraction=1.0).numpy()
    # (each output pixel averages ~5 rows / 4 columns: the edges are about 2.5 from the border)
    assert whole[..., 0].min() < 3.5 and whole[..., 0].max() > 209
    assert whole[..., 1].min() < 3.5 and whole[..., 1].max() > 156
    # A square photo gets the usual central square, eagerly and in tf.data (unknown shape).
    square = coordinate_image(64, 64)
    eager = data.center_crop_resize(square, 32).numpy()
    mapped = _in_tf_data(lambda x: data.center_crop_resize(x, 32), [square, image])
    np.testing.assert_allclose(mapped[0], eager, atol=1e-4)
    assert mapped[1].shape == (32, 32, 3)
    # int(64 * 0.875) = 56 of the 64 rows and columns, centred: 4..59.
    for axis in (0, 1):
        assert 4 <= eager[..., axis].min() < 5.5 and 58 < eager[..., axis].max() <= 59
    # A non-square target keeps its own aspect as the reference.
    assert data.center_crop_resize(image, (24, 48), crop_fraction=1.0).shape == (24, 48, 3)


def test_random_flip_mirrors_about_half_the_time():
    image = coordinate_image(10, 20)
    seeds = np.stack([np.arange(40), np.full(40, 3)], axis=1)
    outs = [data.random_flip(image, s).numpy() for s in seeds]
    mapped = _in_tf_data(lambda x, s: data.random_flip(x, s), [image] * 40, seeds)
    flipped = []
    for out, out_tf in zip(outs, mapped):
        np.testing.assert_array_equal(out, out_tf)
        is_flipped = np.array_equal(out, image[:, ::-1])
        assert is_flipped or np.array_equal(out, image)
        flipped.append(is_flipped)
    assert 8 <= sum(flipped) <= 32  # binomial(40, 1/2): outside this range has probability < 1e-4


def test_resize_never_leaves_the_input_range():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, [37, 53, 3], dtype=np.uint8)
    for size in (8, 96):  # shrink (antialiased) and enlarge
        out = data.resize(noise, size).numpy()
        mapped = _in_tf_data(lambda x: data.resize(x, size), [noise])[0]
        assert out.shape == (size, size, 3) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 255.0
        np.testing.assert_allclose(out, mapped, atol=1e-4)
    flat = np.full([30, 40, 3], 77, np.uint8)
    np.testing.assert_allclose(data.resize(flat, 13).numpy(), 77.0, atol=1e-4)


def test_invalid_arguments():
    image = coordinate_image(10, 10)
    with pytest.raises(ValueError, match="crop scale"):
        data.random_resized_crop(image, 8, [0, 1], scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="crop_fraction"):
        data.center_crop_resize(image, 8, crop_fraction=1.5)
