"""Data augmentation for progressive learning: RandAugment, Mixup, CutMix, label smoothing.

Everything here runs eagerly and inside ``tf.data.Dataset.map`` (graph mode), with
dynamic image and batch sizes.

Per image (before batching)::

    augment = make_image_augmenter(stage.randaug_magnitude, num_ops=2, seed=0)
    ds = ds.map(lambda image, label: (augment(image), label))

Per batch (after batching; labels one-hot [B, C] or integer ids [B])::

    mix = make_batch_augmenter(num_classes, stage.mixup_alpha, stage.cutmix_alpha,
                               label_smoothing=0.1, seed=0)
    ds = ds.batch(64).map(mix)

RandAugment magnitude scale
---------------------------
The magnitude is the official one (google/automl efficientnetv2/autoaugment.py,
inherited from tensorflow/tpu): every op's strength is linear in ``m / 10``, where
10 is the reference level of the RandAugment paper, and values above 10 simply
extrapolate. The paper's Table 6 (S 5..15, M 5..20, L 5..25) and the official
configs' RandAugment magnitudes (S 10, M 15, L 20) are on this scale; there is
no 0..30 rescaling. Per op, at magnitude ``m``:

==============  ==============================================================
op              strength
==============  ==============================================================
Rotate          +-3m degrees (random sign), about the image centre
ShearX / Y      +-0.03m (random sign), about the top-left corner (as PIL)
TranslateX / Y  +-10m pixels (random sign), absolute pixels as in the official
                code, at most half the image side (see below)
Cutout          a gray square of side 8m pixels at a random centre (clipped to
                the image), side at most half the shorter image side
Color, Contrast, Brightness, Sharpness
                PIL ImageEnhance with factor 0.1 + 0.18m (identity at m = 5;
                always an enhancement above 5, as in the official code)
Posterize       keep 8 - int(0.4m) bits, at least 1       (official: see below)
Solarize        invert pixels >= 256 - 25.6m              (official: see below)
SolarizeAdd     add 11m to pixels < 128, clip to 255
AutoContrast, Equalize, Invert
                no magnitude
==============  ==============================================================

Each of ``num_ops`` layers picks one of the 16 ops uniformly and always applies
it (the official code draws a per-op probability but never uses it). Empty
pixels left by geometric ops are filled with gray 128.

Deviations from the official code, all to keep "higher magnitude = stronger":

* Posterize: the official keeps ``int(0.4m)`` bits, i.e. FEWER bits (stronger) at
  LOWER magnitude, and a negative shift (undefined) from m = 22.5. We keep
  ``8 - int(0.4m)`` bits (m = 5: 6 bits, 10: 4, 15: 2), as timm's "increasing" ops.
* Solarize: the official threshold is ``25.6m``, so Solarize does nothing at
  m >= 10. We use ``256 - 25.6m`` (m = 5: 128, m >= 10: the whole image inverts).
* Contrast blends towards the true mean gray level (PIL); the official code uses
  ``H * W / 256`` by mistake.
* Caps: the official shifts and cutout sizes are absolute pixels, tuned with
  Table 6's image sizes (S's largest shift, 150 px at m = 15, is half of its
  300 px images). On smaller images the same m would shift the whole picture out
  (m = 15 on 128 px) and leave a blank gray sample, so shifts are capped at half
  the image side and the cutout side at half the shorter side. At Table 6's sizes
  this only trims the last stages of M and L (200 / 250 px shifts on 380 px
  images become 190 px).
* Pixels stay float (no uint8 rounding between ops); geometric ops interpolate
  bilinearly (the official uses nearest).

Why not keras.layers.RandAugment (checked in Keras 3.15): its ``factor`` is not
a magnitude on this scale and cannot express Table 6's values: it is bounded to
[0, 1] and each sub-layer reads it differently (rotation as a fraction of 360
degrees, translation as a fraction of the image, posterize bits ``int(8 * f)``
growing with f, i.e. weaker), with strengths sampled in [0, f] rather than fixed.
It lacks Invert and Cutout, and it computes all 11 ops for each of
the ``num_ops`` layers and selects with ``where``: 65-100 ms per 160x213 image
inside tf.data on the shared 2-core CPU, against 3-4 ms here, where
``tf.switch_case`` runs only the chosen op.

Why not keras.layers.MixUp / CutMix: CutMix's ``factor`` is not alpha (alpha
is drawn uniformly from [0, factor], factor <= 1), its boxes always lie fully
inside the image (the official centre is uniform and the box is clipped), and its
label weight is the continuous box area while the pasted mask is on the pixel
grid, so label weight and pasted fraction disagree (by about 0.3 points of area on
37x53 images, measured). MixUp pairs by random permutation instead of the official
reversed batch and does not use the official ``max(lam, 1 - lam)``. Neither splits
a batch half/half. The TF code
below is about 60 lines and matches the official recipe:

* Mixup: per row ``lam ~ Beta(a, a)``, ``lam = max(lam, 1 - lam)``; row i is mixed
  with row ``n - 1 - i`` of its group (the batch reversed; in an odd group the
  middle row pairs with itself and stays unchanged, as in the official code).
* CutMix: per row a box with uniform centre and side ``sqrt(1 - lam) * size``,
  ``lam ~ Beta(a, a)``, clipped to the image; the pasted pixels come from the
  reversed row and the label weight is the exact pasted pixel fraction.
* Both on: the first ``B // 2`` rows get Mixup, the rest CutMix, each paired
  within its own half (as the official ``mixing``).
* Label smoothing ``y * (1 - eps) + eps / C`` is applied after mixing (the
  two commute). Smooth here OR in the loss, not both.

Randomness: each augmenter owns a ``tf.random.Generator`` (seeded by ``seed``,
non-deterministic when None) and draws one stateless seed per call; all ops are
stateless given that seed. A sequential map is reproducible for a fixed seed; a
parallel map can hand the generator's seeds to elements in any order. For
bit-exact reproducibility with parallel maps pass a per-element seed (shape [2]
int) as the second argument, e.g. from ``tf.data.Dataset.random(seed).batch(2)``
zipped with the data. Create augmenters outside ``tf.function``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import tensorflow as tf

MAX_LEVEL = 10.0
FILL_VALUE = 128.0
# Official RandAugment op list, in the official order.
RANDAUGMENT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
    "Cutout", "SolarizeAdd",
)
_TRANSLATE_CONST = 100.0  # pixels at level 10 (official RandAugment)
_CUTOUT_CONST = 40.0  # half-side in pixels at level 10 (official RandAugment)


# --- helpers -----------------------------------------------------------------


def _new_generator(seed: Optional[int]) -> tf.random.Generator:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int or None, got {seed!r}.")
    # On the CPU: tf.data runs there, and a GPU-placed state variable would not be
    # readable from the input pipeline.
    with tf.device("/CPU:0"):
        if seed is None:
            return tf.random.Generator.from_non_deterministic_state()
        return tf.random.Generator.from_seed(seed)


def _call_seed(generator: tf.random.Generator, seed) -> tf.Tensor:
    if seed is None:
        return generator.make_seeds(1)[:, 0]
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer:
        raise ValueError(f"seed must be an integer tensor of shape [2], got dtype {seed.dtype}.")
    return tf.reshape(tf.cast(seed, tf.int64), [2])


def _split(seed: tf.Tensor, num: int):
    seeds = tf.random.experimental.stateless_split(seed, num=num)
    return [seeds[i] for i in range(num)]


def _random_sign(seed: tf.Tensor) -> tf.Tensor:
    u = tf.random.stateless_uniform([], seed=seed)
    return tf.where(u < 0.5, -1.0, 1.0)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
    """PIL ImageEnhance: factor 0 gives ``degenerate``, 1 the image, > 1 extrapolates."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _grayscale(image: tf.Tensor) -> tf.Tensor:
    return tf.image.rgb_to_grayscale(image)  # [H, W, 1], ITU-R 601 weights as PIL


def _transform(image: tf.Tensor, matrix) -> tf.Tensor:
    """Projective transform; ``matrix`` (8 values) maps OUTPUT (x, y) to INPUT."""
    matrix = tf.reshape(tf.cast(tf.stack(matrix), tf.float32), [1, 8])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=matrix,
        output_shape=tf.shape(image)[:2],
        fill_value=FILL_VALUE,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return out[0]


def _hw(image):
    shape = tf.shape(image)
    return tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)


# --- the 16 RandAugment ops on float32 [H, W, 3] in [0, 255] -------------------
# Each is op(image, magnitude, seed); magnitude is a float32 scalar tensor.


def _auto_contrast(image, magnitude, seed):
    lo = tf.reduce_min(image, axis=[0, 1])
    hi = tf.reduce_max(image, axis=[0, 1])
    scaled = (image - lo) * tf.math.divide_no_nan(255.0, hi - lo)
    return tf.where(hi > lo, tf.clip_by_value(scaled, 0.0, 255.0), image)


def _equalize_channel(channel):
    q = tf.cast(tf.clip_by_value(channel, 0.0, 255.0), tf.int32)  # uint8 levels, as PIL
    hist = tf.math.bincount(tf.reshape(q, [-1]), minlength=256, maxlength=256)
    last_nonzero = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
    step = (tf.reduce_sum(hist) - last_nonzero) // 255
    safe_step = tf.maximum(step, 1)
    lut = (tf.cumsum(hist) + safe_step // 2) // safe_step
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.where(step > 0, tf.cast(tf.gather(lut, q), tf.float32), channel)


def _equalize(image, magnitude, seed):
    return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], axis=-1)


def _invert(image, magnitude, seed):
    return 255.0 - image


def _rotate(image, magnitude, seed):
    radians = _random_sign(seed) * (magnitude / MAX_LEVEL * 30.0) * math.pi / 180.0
    h, w = _hw(image)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    c, s = tf.cos(radians), tf.sin(radians)
    return _transform(image, [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, 0.0, 0.0])


def _posterize(image, magnitude, seed):
    bits = tf.clip_by_value(8.0 - tf.floor(magnitude / MAX_LEVEL * 4.0), 1.0, 8.0)
    step = tf.pow(2.0, 8.0 - bits)
    return tf.floor(image / step) * step


def _solarize(image, magnitude, seed):
    threshold = tf.clip_by_value(256.0 - magnitude / MAX_LEVEL * 256.0, 0.0, 256.0)
    return tf.where(image < threshold, image, 255.0 - image)


def _solarize_add(image, magnitude, seed):
    addition = magnitude / MAX_LEVEL * 110.0
    return tf.where(image < 128.0, tf.clip_by_value(image + addition, 0.0, 255.0), image)


def _enhance_factor(magnitude):
    return magnitude / MAX_LEVEL * 1.8 + 0.1


def _color(image, magnitude, seed):
    return _blend(tf.image.grayscale_to_rgb(_grayscale(image)), image, _enhance_factor(magnitude))


def _contrast(image, magnitude, seed):
    mean = tf.reduce_mean(_grayscale(image))
    return _blend(tf.fill(tf.shape(image), mean), image, _enhance_factor(magnitude))


def _brightness(image, magnitude, seed):
    return _blend(tf.zeros_like(image), image, _enhance_factor(magnitude))


def _sharpness(image, magnitude, seed):
    # PIL's SMOOTH filter on the interior; the one-pixel border keeps the original.
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    interior = tf.pad(tf.ones([h - 2, w - 2, 1], tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(interior, smooth, image)
    return _blend(degenerate, image, _enhance_factor(magnitude))


def _shear_x(image, magnitude, seed):
    level = _random_sign(seed) * (magnitude / MAX_LEVEL * 0.3)
    return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def _shear_y(image, magnitude, seed):
    level = _random_sign(seed) * (magnitude / MAX_LEVEL * 0.3)
    return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def _translate_pixels(magnitude, side, seed):
    pixels = tf.minimum(magnitude / MAX_LEVEL * _TRANSLATE_CONST, 0.5 * side)
    return _random_sign(seed) * pixels


def _translate_x(image, magnitude, seed):
    pixels = _translate_pixels(magnitude, _hw(image)[1], seed)
    return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def _translate_y(image, magnitude, seed):
    pixels = _translate_pixels(magnitude, _hw(image)[0], seed)
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


def _cutout(image, magnitude, seed):
    h, w = _hw(image)
    pad = tf.minimum(tf.floor(magnitude / MAX_LEVEL * _CUTOUT_CONST),
                     tf.floor(tf.minimum(h, w) / 4.0))
    u = tf.random.stateless_uniform([2], seed=seed)
    cy, cx = tf.floor(u[0] * h), tf.floor(u[1] * w)
    ys = tf.range(h)[:, None, None]
    xs = tf.range(w)[None, :, None]
    inside = (ys >= cy - pad) & (ys < cy + pad) & (xs >= cx - pad) & (xs < cx + pad)
    return tf.where(inside, FILL_VALUE, image)


_OP_FUNCS = {
    "AutoContrast": _auto_contrast,
    "Equalize": _equalize,
    "Invert": _invert,
    "Rotate": _rotate,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "Color": _color,
    "Contrast": _contrast,
    "Brightness": _brightness,
    "Sharpness": _sharpness,
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
    "Cutout": _cutout,
    "SolarizeAdd": _solarize_add,
}
assert tuple(_OP_FUNCS) == RANDAUGMENT_OPS


def apply_op(name: str, image, magnitude: float, seed=(0, 0)) -> tf.Tensor:
    """Applies one named RandAugment op (for tests and visual checks)."""
    if name not in _OP_FUNCS:
        raise ValueError(f"Unknown op {name!r}; known: {', '.join(RANDAUGMENT_OPS)}.")
    image = tf.cast(image, tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return _OP_FUNCS[name](image, tf.constant(float(magnitude), tf.float32), seed)


# One RandAugment layer: pick one of the 16 ops uniformly and apply it;
# tf.switch_case runs only the chosen op. A plain function, traced into the
# caller's graph (the tf.data map function): a module-level tf.function would be
# traced once per process, but its concrete function then lives in the eager
# context, and under MultiWorkerMirroredStrategy a dataset that calls it fails
# to make its iterator on non-chief workers ("Haven't set up remote eager worker").
def _randaugment_layer(image, magnitude, choice_seed, op_seed):
    index = tf.random.stateless_uniform(
        [], seed=choice_seed, maxval=len(RANDAUGMENT_OPS), dtype=tf.int32)
    branches = [
        (lambda op=_OP_FUNCS[name]: op(image, magnitude, op_seed)) for name in RANDAUGMENT_OPS
    ]
    return tf.switch_case(index, branches)


def _cast_like(x: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    if dtype.is_integer:
        return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), dtype)
    return tf.cast(x, dtype)


# --- public API ----------------------------------------------------------------


def make_image_augmenter(
    magnitude: Optional[float], num_ops: int = 2, seed: Optional[int] = None,
    probability: float = 1.0,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """RandAugment for one image: ``[H, W, 3]`` 0-255 in, same shape/dtype/range out.

    ``magnitude`` is on the official scale (module docstring); 0 or None, or
    ``num_ops=0``, or ``probability=0`` returns the identity (the input tensor
    itself). ``probability`` is the chance that an image is augmented at all (its
    ``num_ops`` ops, or none); 1 is the official RandAugment. The returned
    function takes an optional second argument, a per-call seed of shape [2].

    >>> augment = make_image_augmenter(10, num_ops=2, seed=0, probability=0.5)
    >>> augment(tf.zeros([8, 8, 3])).shape
    TensorShape([8, 8, 3])
    """
    if magnitude is not None:
        if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)) \
                or not math.isfinite(magnitude) or magnitude < 0:
            raise ValueError(f"magnitude must be a finite number >= 0 or None, got {magnitude!r}.")
    if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 0:
        raise ValueError(f"num_ops must be an int >= 0, got {num_ops!r}.")
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) \
            or not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be a number in [0, 1], got {probability!r}.")
    if not magnitude or num_ops == 0 or probability == 0:
        def identity(image, seed=None):
            return image
        return identity

    magnitude = float(magnitude)
    generator = _new_generator(seed)

    def augment(image, seed=None):
        image = tf.convert_to_tensor(image)
        if image.shape.rank is not None and image.shape.rank != 3:
            raise ValueError(
                f"make_image_augmenter works on one image [H, W, 3]; got shape {image.shape}. "
                "Map it over a dataset before batching."
            )
        dtype = image.dtype
        x = tf.cast(image, tf.float32)
        seeds = _split(_call_seed(generator, seed), 2 * num_ops + 1)

        def randaugment():
            y = x
            for i in range(num_ops):
                y = _randaugment_layer(y, magnitude, seeds[2 * i], seeds[2 * i + 1])
                y.set_shape(image.shape)
            return y

        if probability < 1.0:
            apply = tf.random.stateless_uniform([], seed=seeds[-1]) < probability
            out = tf.cond(apply, randaugment, lambda: x)
        else:
            out = randaugment()
        return _cast_like(out, dtype)

    return augment


def _check_smoothing(label_smoothing) -> None:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}.")


def smooth_labels(labels, label_smoothing: float):
    """``labels * (1 - eps) + eps / C`` over the last axis (C classes)."""
    _check_smoothing(label_smoothing)
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_floating:
        labels = tf.cast(labels, tf.float32)
    if label_smoothing == 0:
        return labels
    num_classes = tf.cast(tf.shape(labels)[-1], labels.dtype)
    eps = tf.cast(label_smoothing, labels.dtype)
    return labels * (1.0 - eps) + eps / num_classes


def _sample_beta(n, alpha: float, seed) -> tf.Tensor:
    """Beta(alpha, alpha) of shape [n] from two stateless Gamma draws (float64)."""
    s1, s2 = _split(seed, 2)
    g1 = tf.random.stateless_gamma([n], seed=s1, alpha=alpha, dtype=tf.float64)
    g2 = tf.random.stateless_gamma([n], seed=s2, alpha=alpha, dtype=tf.float64)
    total = g1 + g2
    # Tiny alpha can underflow both draws; Beta then sits at 0 or 1 anyway.
    lam = tf.where(total > 0, g1 / tf.where(total > 0, total, 1.0), 1.0)
    return tf.cast(lam, tf.float32)


def _mixup(images, labels, alpha: float, seed):
    n = tf.shape(images)[0]
    lam = _sample_beta(n, alpha, seed)
    lam = tf.maximum(lam, 1.0 - lam)
    w = lam[:, None, None, None]
    images = w * images + (1.0 - w) * images[::-1]
    labels = lam[:, None] * labels + (1.0 - lam[:, None]) * labels[::-1]
    return images, labels


def _cutmix(images, labels, alpha: float, seed):
    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    beta_seed, box_seed = _split(seed, 2)
    lam = _sample_beta(n, alpha, beta_seed)
    u = tf.random.stateless_uniform([n, 2], seed=box_seed)
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    cy = tf.minimum(tf.floor(u[:, 0] * hf), hf - 1.0)
    cx = tf.minimum(tf.floor(u[:, 1] * wf), wf - 1.0)
    ratio = tf.sqrt(1.0 - lam)
    half_h = tf.floor(tf.floor(ratio * hf) / 2.0)
    half_w = tf.floor(tf.floor(ratio * wf) / 2.0)
    y1 = tf.clip_by_value(cy - half_h, 0.0, hf)[:, None, None]
    y2 = tf.clip_by_value(cy + half_h, 0.0, hf)[:, None, None]
    x1 = tf.clip_by_value(cx - half_w, 0.0, wf)[:, None, None]
    x2 = tf.clip_by_value(cx + half_w, 0.0, wf)[:, None, None]
    ys = tf.range(hf)[None, :, None]
    xs = tf.range(wf)[None, None, :]
    mask = (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)  # [n, h, w]
    area = tf.reduce_mean(tf.cast(mask, tf.float32), axis=[1, 2])  # exact pasted fraction
    images = tf.where(mask[..., None], images[::-1], images)
    labels = (1.0 - area[:, None]) * labels + area[:, None] * labels[::-1]
    return images, labels


def make_batch_augmenter(
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    label_smoothing: float = 0.0,
    seed: Optional[int] = None,
) -> Callable:
    """Mixup / CutMix / label smoothing for one batch (see the module docstring).

    The returned ``fn(images, labels, seed=None)`` takes images ``[B, H, W, 3]`` and
    labels one-hot ``[B, num_classes]`` (or integer ids ``[B]``) and returns float32
    images and float32 soft labels ``[B, num_classes]`` that sum to 1 per row.
    An alpha of 0 turns that op off.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    _check_smoothing(label_smoothing)
    mixup_alpha, cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
    generator = _new_generator(seed)

    def augment(images, labels, seed=None):
        images = tf.convert_to_tensor(images)
        labels = tf.convert_to_tensor(labels)
        out_dtype = images.dtype if images.dtype.is_floating else tf.float32
        images = tf.cast(images, tf.float32)
        if labels.dtype.is_integer and labels.shape.rank == 1:
            labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        labels = tf.cast(labels, tf.float32)
        if labels.shape.rank is not None and labels.shape.rank != 2:
            raise ValueError(f"labels must be one-hot [B, C] or ids [B], got shape {labels.shape}.")
        if labels.shape.rank == 2 and labels.shape[-1] is not None \
                and labels.shape[-1] != num_classes:
            raise ValueError(
                f"labels have {labels.shape[-1]} classes but num_classes={num_classes}.")
        if mixup_alpha > 0 or cutmix_alpha > 0:
            mix_seed, cut_seed = _split(_call_seed(generator, seed), 2)
            batch = tf.shape(images)[0]
            if mixup_alpha > 0 and cutmix_alpha > 0:
                n_mix = batch // 2  # first half Mixup, second half CutMix
            elif mixup_alpha > 0:
                n_mix = batch
            else:
                n_mix = 0
            parts_i, parts_l = [], []
            if mixup_alpha > 0:
                im, lb = _mixup(images[:n_mix], labels[:n_mix], mixup_alpha, mix_seed)
                parts_i.append(im)
                parts_l.append(lb)
            if cutmix_alpha > 0:
                im, lb = _cutmix(images[n_mix:], labels[n_mix:], cutmix_alpha, cut_seed)
                parts_i.append(im)
                parts_l.append(lb)
            static = images.shape
            images = tf.concat(parts_i, axis=0) if len(parts_i) > 1 else parts_i[0]
            labels = tf.concat(parts_l, axis=0) if len(parts_l) > 1 else parts_l[0]
            images.set_shape(static)
        labels = smooth_labels(labels, label_smoothing)
        return tf.cast(images, out_dtype), labels

    return augment
