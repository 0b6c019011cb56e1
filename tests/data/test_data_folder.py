"""Image folders: real photos, split carving, unreadable files, layout errors, disk cache."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from effv2_keras import data


def _labels(source):
    return Counter(int(label) for _, label in source.dataset.as_numpy_iterator())


def test_signdigits_classes_counts_and_shapes(signdigits, signdigits_manifest):
    splits = signdigits
    assert splits.class_names == [str(i) for i in range(10)]
    assert splits.num_classes == 10
    assert splits.skipped_files == 0
    # Test comes from the test/ folder untouched; train + carved val partition train/.
    assert _labels(splits.test) == signdigits_manifest["test"]
    assert splits.test.num_examples == sum(signdigits_manifest["test"].values()) == 411
    assert _labels(splits.train) + _labels(splits.val) == signdigits_manifest["train"]
    # Stratified 10%: per class round(0.1 * n_c) (n_c = 163-166 -> 16 or 17).
    expected_val = Counter({c: int(round(0.1 * n)) for c, n in signdigits_manifest["train"].items()})
    assert _labels(splits.val) == expected_val
    assert splits.train.num_examples + splits.val.num_examples == 1651
    for source in (splits.train, splits.val, splits.test):
        assert len(source.dataset) == source.num_examples  # cardinality asserted
    image, label = next(iter(splits.test.dataset))
    assert image.dtype.name == "uint8" and tuple(image.shape) == (100, 100, 3)
    assert label.dtype.name == "int64" and int(label) == 0


def test_signdigits_pixels_match_an_independent_decoder(signdigits, signdigits_dir):
    # First test element = class "0", first file in sorted order. Pillow and TF both use
    # libjpeg(-turbo) but may differ in IDCT / upsampling details: allow a mean error of 1
    # grey level and a few levels at worst, far below what a wrong file or channel order gives.
    first = sorted((signdigits_dir / "test" / "0").iterdir())[0]
    reference = np.asarray(Image.open(first).convert("RGB"), np.float32)
    image = next(iter(signdigits.test.dataset))[0].numpy().astype(np.float32)
    assert image.shape == reference.shape
    assert np.abs(image - reference).mean() < 1.0
    assert np.abs(image - reference).max() <= 8


def test_carving_is_seeded_stratified_and_disjoint(id_folder, ids_of):
    spec = f"folder:{id_folder}"
    first = data.load(spec, val_fraction=0.3, seed=0)
    again = data.load(spec, val_fraction=0.3, seed=0)
    other = data.load(spec, val_fraction=0.3, seed=1)
    train, val = ids_of(first.train), ids_of(first.val)
    assert first.test is None
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(20))
    assert sum(k < 10 for k in val) == 3 and sum(k >= 10 for k in val) == 3  # 30% of each class
    assert ids_of(again.val) == val and ids_of(again.train) == train
    assert ids_of(other.val) != val
    assert sorted(ids_of(other.train) + ids_of(other.val)) == list(range(20))


def test_no_validation_when_fraction_is_zero(id_folder, ids_of):
    splits = data.load(f"folder:{id_folder}", val_fraction=0.0)
    assert splits.val is None and ids_of(splits.train) == list(range(20))


def test_split_folders_are_used_and_test_never_carved(tmp_path, write_image, ids_of):
    root = tmp_path / "split"
    for k in range(6):
        write_image(root / "train" / ("cat" if k % 2 else "dog") / f"{k}.png", np.full([8, 8, 3], k * 10 + 5))
    write_image(root / "validation" / "cat" / "v.png", np.full([8, 8, 3], 105))  # val may lack a class
    for k in (20, 21):
        write_image(root / "test" / ("cat" if k % 2 else "dog") / f"{k}.png", np.full([8, 8, 3], k * 10 + 5))
    splits = data.load(f"folder:{root}", val_fraction=0.5, seed=0)
    assert splits.class_names == ["cat", "dog"]
    assert ids_of(splits.train) == list(range(6))  # val_fraction ignored: val/ exists
    assert ids_of(splits.val) == [10]
    assert ids_of(splits.test) == [20, 21]
    assert dict(_labels(splits.val)) == {0: 1}

    write_image(root / "test" / "bird" / "x.png", np.zeros([8, 8, 3]))
    with pytest.raises(ValueError, match=r"bird.*train split does not have"):
        data.load(f"folder:{root}")


def test_unreadable_files_are_skipped_counted_and_reported_once(tmp_path, write_image, caplog):
    rng = np.random.default_rng(0)
    root = tmp_path / "mixed"
    photo = rng.integers(0, 256, [30, 40, 3], dtype=np.uint8)
    good = {
        "a/photo.jpg": lambda p: write_image(p, photo, quality=90),
        "a/photo.png": lambda p: write_image(p, photo),
        "a/photo.bmp": lambda p: write_image(p, photo),
        "b/gray.jpg": lambda p: write_image(p, photo[..., 0]),
        "b/alpha.png": lambda p: Image.fromarray(photo).convert("RGBA").save(p),
        "b/anim.gif": lambda p: Image.fromarray(np.zeros([30, 40, 3], np.uint8)).save(
            p, save_all=True, append_images=[Image.fromarray(np.full([30, 40, 3], 255, np.uint8))]),
        "b/jpeg_named.dat": lambda p: write_image(p, photo, format="JPEG"),  # content decides, not suffix
    }
    for name, make in good.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make(root / name)
    jpeg = (root / "a/photo.jpg").read_bytes()
    png = (root / "a/photo.png").read_bytes()
    bad = {
        "a/empty.jpg": b"",
        "a/truncated_half.jpg": jpeg[: len(jpeg) // 2],
        "a/truncated_no_eoi.jpg": jpeg[:-2],
        "b/truncated.png": png[: len(png) // 2],
        "b/text.jpg": b"not an image at all\n",
        "b/notes.txt": b"labels were checked by hand\n",
        "b/garbage.png": rng.integers(0, 256, 500, dtype=np.uint8).tobytes(),
    }
    for name, content in bad.items():
        (root / name).write_bytes(content)
    (root / "a" / ".DS_Store").write_bytes(b"\0\1hidden")  # hidden: ignored, not counted

    with caplog.at_level(logging.WARNING, logger="effv2_keras.data"):
        splits = data.load(f"folder:{root}", val_fraction=0.0)
    assert splits.skipped_files == len(bad) == 7
    assert splits.train.num_examples == len(good) == 7
    assert _labels(splits.train) == Counter({0: 3, 1: 4})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "skipped 7 of 14 files" in message
    assert all(name.split("/")[1] in message for name in bad)
    images = [image for image, _ in splits.train.dataset.as_numpy_iterator()]
    assert all(image.shape == (30, 40, 3) and image.dtype == np.uint8 for image in images)
    # Sorted order within class b: alpha.png, anim.gif, gray.jpg, jpeg_named.dat.
    alpha, anim, gray = images[3], images[4], images[5]
    np.testing.assert_array_equal(alpha, photo)  # RGBA -> RGB, lossless
    np.testing.assert_array_equal(anim, np.zeros_like(anim))  # first GIF frame only
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])


def test_empty_class_folder_is_an_error_naming_it(tmp_path, write_image):
    root = tmp_path / "empty_class"
    write_image(root / "a" / "x.png", np.zeros([8, 8, 3]))
    (root / "b").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*empty_class/b is empty"):
        data.load(f"folder:{root}")


def test_one_class_is_an_error_naming_the_folder(tmp_path, write_image):
    root = tmp_path / "one_class"
    write_image(root / "only" / "x.png", np.zeros([8, 8, 3]))
    with pytest.raises(ValueError, match=r"one_class has 1 class folder.*at least 2"):
        data.load(f"folder:{root}")


def test_class_without_any_readable_image_is_an_error(tmp_path, write_image):
    root = tmp_path / "all_bad"
    write_image(root / "a" / "x.png", np.zeros([8, 8, 3]))
    (root / "b").mkdir()
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    with pytest.raises(ValueError, match=r"no readable image.*all_bad/b"):
        data.load(f"folder:{root}", val_fraction=0.0)


def test_bad_specs_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="folder:PATH, tfds:NAME"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="unknown data set spec"):
        data.load("folder:")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="val_fraction"):
        data.load("digits", val_fraction=1.0)


def test_relative_folder_path_uses_data_dir(id_folder, ids_of):
    splits = data.load(f"folder:{id_folder.name}", data_dir=str(id_folder.parent), val_fraction=0.0)
    assert ids_of(splits.train) == list(range(20))


@pytest.mark.parametrize("on_disk", [False, True])
def test_images_are_decoded_once_at_load(tmp_path, id_folder, ids_of, on_disk):
    # After load the files can vanish: every later pass (and each pipeline size) reads the cache.
    cache_dir = str(tmp_path / "cache") if on_disk else None
    splits = data.load(f"folder:{id_folder}", val_fraction=0.2, seed=0, cache_dir=cache_dir)
    for path in sorted(id_folder.rglob("*.png")):
        path.unlink()
    assert sorted(ids_of(splits.train) + ids_of(splits.val)) == list(range(20))
    for size in (16, 24):
        batches = list(data.make_pipeline(splits.train, size, 4, 2, training=True).as_numpy_iterator())
        assert len(batches) == 4 and batches[0][0].shape == (4, size, size, 3)


def test_disk_cache_is_written_and_reused(tmp_path, id_folder, ids_of):
    (id_folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cache = tmp_path / "cache"
    first = data.load(f"folder:{id_folder}", val_fraction=0.2, seed=0, cache_dir=str(cache))
    written = sorted(p.name for p in cache.iterdir())
    assert any(name.startswith("folder-train-") for name in written)
    assert any(name.startswith("folder-val-") for name in written)
    second = data.load(f"folder:{id_folder}", val_fraction=0.2, seed=0, cache_dir=str(cache))
    assert sorted(p.name for p in cache.iterdir()) == written  # same keys: reused, not rewritten
    assert second.skipped_files == first.skipped_files == 1  # known from the cached indices
    assert ids_of(second.train) == ids_of(first.train) and ids_of(second.val) == ids_of(first.val)
    assert second.train.num_examples + second.val.num_examples == 20
