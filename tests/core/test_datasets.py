"""Dataset loaders: CIFAR-10 python format (tar and folder), image folders (dir and zip),
class mapping, npz round trip, download checks, and a slice of the real CIFAR-10 zip."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
from helpers_data import CIFAR_NAMES, png_bytes, shared_data_file, write_fake_cifar
from PIL import Image

from mlcore.data.datasets import (
    ClassMapping,
    DatasetError,
    LabelledImages,
    apply_mapping,
    download_cifar10,
    find_shared_data,
    load_dataset,
)


def _expected(truth, names):
    images = np.concatenate([truth[n][0] for n in names])
    labels = np.concatenate([truth[n][1] for n in names])
    return images, labels


@pytest.mark.parametrize("as_tar", [True, False], ids=["tar.gz", "folder"])
def test_cifar_python_format_pixels_labels_and_splits(tmp_path, as_tar):
    tar_path, folder, truth = write_fake_cifar(tmp_path, per_batch=3, n_test=4)
    source = tar_path if as_tar else folder
    test = load_dataset(source, split="test")
    images, labels = _expected(truth, ["test_batch"])
    assert test.class_names == CIFAR_NAMES
    assert test.images.shape == (4, 32, 32, 3) and test.images.dtype == np.uint8
    np.testing.assert_array_equal(test.images, images)
    np.testing.assert_array_equal(test.labels, labels)
    assert test.ids == [f"test_batch:{i}" for i in range(4)]

    train = load_dataset(source, split="train")
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    np.testing.assert_array_equal(train.images, _expected(truth, train_names)[0])
    everything = load_dataset(source)
    assert len(everything) == 15 + 4
    np.testing.assert_array_equal(everything.images[-4:], images)


def test_cifar_pixel_layout_is_rgb_planes_row_major(tmp_path):
    _, folder, truth = write_fake_cifar(tmp_path)
    ds = load_dataset(folder, split="test")
    raw = pickle.loads((folder / "test_batch").read_bytes())[b"data"]
    # pixel (y=5, x=7) of image 2: red at 5*32+7, green 1024 later, blue 2048 later
    assert tuple(ds.images[2, 5, 7]) == (raw[2, 167], raw[2, 1024 + 167], raw[2, 2048 + 167])


def test_cifar_archive_refuses_pickles_that_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    _, folder, _ = write_fake_cifar(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DatasetError, match="builtins.print"):
        load_dataset(folder, split="test")


def test_cifar_archive_incomplete_or_wrong_split(tmp_path):
    tar_path, folder, _ = write_fake_cifar(tmp_path)
    with pytest.raises(DatasetError, match="split"):
        load_dataset(tar_path, split="validation")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset(folder, split="train")


def _folder_members(rng):
    members = {}
    truth = {}
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            for i in range(3):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                name = f"{split}/{cls}/{i:04d}.png"
                members[name] = png_bytes(img)
                truth[name] = img
    big = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    members["train/dog/big.png"] = png_bytes(big)
    grey = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    members["train/cat/grey.png"] = png_bytes(grey)
    truth["train/cat/grey.png"] = np.stack([grey] * 3, -1)
    members["train/cat/corrupt.jpg"] = b"\xff\xd8\xff\xe0 this is not really a jpeg"
    members["train/readme.txt"] = b"not an image"
    return members, truth


@pytest.mark.parametrize("as_zip", [False, True], ids=["directory", "zip"])
def test_image_folder_skips_corrupt_members_and_resizes(tmp_path, as_zip):
    members, truth = _folder_members(np.random.default_rng(1))
    if as_zip:
        source = tmp_path / "images.zip"
        with zipfile.ZipFile(source, "w", zipfile.ZIP_STORED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        source = tmp_path / "images"
        for name, data in members.items():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(data)

    with pytest.warns(UserWarning) as record:
        ds = load_dataset(source, split="train")
    messages = " ".join(str(w.message) for w in record)
    assert "train/cat/corrupt.jpg" in messages and "train/readme.txt" in messages
    skipped = dict(ds.skipped)
    assert (
        "train/cat/corrupt.jpg" in skipped and "readable image" in skipped["train/cat/corrupt.jpg"]
    )
    assert "train/readme.txt" in skipped
    assert ds.class_names == ["cat", "dog"]
    assert ds.images.shape == (8, 32, 32, 3)  # 3 + grey cat, 3 + big dog
    for k, image_id in enumerate(ds.ids):
        if image_id in truth:
            np.testing.assert_array_equal(ds.images[k], truth[image_id])
        assert ds.class_names[ds.labels[k]] == image_id.split("/")[1]
    assert "train/dog/big.png" in ds.ids  # resized to the dataset's 32x32, not rejected
    assert ds.counts() == {"cat": 4, "dog": 4}

    with pytest.warns(UserWarning) as record:
        everything = load_dataset(source)
    assert len(record) == 2
    assert len(everything) == 8 + 6
    with pytest.raises(DatasetError, match="no split 'val'"):
        load_dataset(source, split="val")


def test_image_folder_without_split_level(tmp_path):
    rng = np.random.default_rng(2)
    for cls in ("ship", "plane"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.jpg"
            )
    ds = load_dataset(tmp_path)
    assert ds.class_names == ["plane", "ship"] and ds.tile_size == (16, 16) and len(ds) == 4


def test_unknown_or_empty_sources_give_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "data.bin").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_dataset(tmp_path / "data.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        load_dataset(tmp_path / "empty")


def test_npz_round_trip_subset_and_counts(tmp_path):
    rng = np.random.default_rng(3)
    ds = LabelledImages(
        images=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
        labels=[0, 1, 1, 2, 0],
        class_names=["car", "boat", "negative"],
        ids=list("abcde"),
        skipped=[("x.jpg", "broken")],
    )
    ds.save_npz(tmp_path / "ds.npz")
    back = load_dataset(tmp_path / "ds.npz")
    np.testing.assert_array_equal(back.images, ds.images)
    assert back.ids == ds.ids and back.class_names == ds.class_names
    assert back.skipped == [("x.jpg", "broken")]
    assert back.counts() == {"car": 2, "boat": 2, "negative": 1}
    boats = back.subset("boat")
    assert boats.ids == ["b", "c"] and boats.class_names == ds.class_names
    assert back.subset(np.array([True, False, False, False, True])).ids == ["a", "e"]
    with pytest.raises(DatasetError, match="labels must index"):
        LabelledImages(ds.images, [0, 1, 1, 2, 3], ds.class_names, ds.ids)


def test_class_mapping_default_and_custom():
    rng = np.random.default_rng(4)
    ds = LabelledImages(
        images=rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8),
        labels=np.arange(10),
        class_names=CIFAR_NAMES,
        ids=[str(i) for i in range(10)],
    )
    mapped = apply_mapping(ds, ClassMapping.cifar_default())
    assert mapped.class_names == ["car", "boat", "negative"]
    assert mapped.counts() == {"car": 1, "boat": 1, "negative": 8}
    assert mapped.class_names[mapped.labels[1]] == "car"  # automobile
    assert mapped.class_names[mapped.labels[8]] == "boat"  # ship
    np.testing.assert_array_equal(mapped.images, ds.images)

    only_vehicles = apply_mapping(
        ds, ClassMapping.parse("automobile:vehicle,truck:vehicle,ship:boat", negative=None)
    )
    assert only_vehicles.class_names == ["vehicle", "boat"]
    assert only_vehicles.ids == ["1", "8", "9"]
    with pytest.raises(DatasetError, match="does not have"):
        apply_mapping(ds, ClassMapping({"car": "car"}))


def test_download_checks_md5_and_explains_manual_placement(tmp_path):
    payload = tmp_path / "served.tar.gz"
    with tarfile.open(payload, "w:gz") as tar:
        info = tarfile.TarInfo("hello.txt")
        data = b"hello"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    md5 = hashlib.md5(payload.read_bytes()).hexdigest()
    dest = tmp_path / "dest"

    with pytest.raises(DatasetError, match="MD5") as err:
        download_cifar10(dest, url=payload.as_uri(), md5="0" * 32)
    assert "cifar-10-python.tar.gz" in str(err.value)
    assert list(dest.iterdir()) == []  # nothing half-written is left

    got = download_cifar10(dest, url=payload.as_uri(), md5=md5)
    assert got == dest / "cifar-10-python.tar.gz" and got.read_bytes() == payload.read_bytes()
    assert download_cifar10(dest, url="http://127.0.0.1:9/never", md5=md5) == got  # reused

    with pytest.raises(DatasetError, match=str(tmp_path / "offline")):
        download_cifar10(tmp_path / "offline", url="http://127.0.0.1:9/cifar.tar.gz", timeout=5)


def test_find_shared_data_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCORE_SHARED_DATA", str(tmp_path))
    assert find_shared_data() == tmp_path
    monkeypatch.setenv("MLCORE_SHARED_DATA", str(tmp_path / "missing"))
    assert find_shared_data() is None


def test_real_cifar10_zip_test_split():
    zip_path = shared_data_file("cifar10-jpg.zip")
    ds = load_dataset(zip_path, split="test")
    assert ds.class_names == CIFAR_NAMES
    assert ds.counts() == dict.fromkeys(CIFAR_NAMES, 1000)
    assert ds.images.shape == (10000, 32, 32, 3) and not ds.skipped
    assert ds.ids[0].startswith("test/airplane/")
    mapped = apply_mapping(ds, ClassMapping.cifar_default())
    assert mapped.counts() == {"car": 1000, "boat": 1000, "negative": 8000}


def test_oversized_members_are_skipped_before_they_are_inflated(tmp_path):
    """A zip bomb member or a huge picture among the tiles is skipped with the reason."""
    import mlcore.data.datasets as datasets

    tile = png_bytes(np.full((32, 32, 3), 100, np.uint8))
    big = Image.new("RGB", (5000, 4000))
    buffer = io.BytesIO()
    big.save(buffer, "PNG")
    path = tmp_path / "tiles.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train/car/ok.png", tile)
        archive.writestr("train/car/huge.png", buffer.getvalue())
        archive.writestr("train/boat/bomb.png", b"\0" * (datasets.MAX_TILE_BYTES + 1))
        archive.writestr("train/boat/ok.png", tile)
    with pytest.warns(UserWarning):
        ds = datasets.load_image_zip(path)
    assert sorted(ds.ids) == ["train/boat/ok.png", "train/car/ok.png"]
    reasons = dict(ds.skipped)
    assert "too large for a labelled tile" in reasons["train/car/huge.png"]
    assert "bytes uncompressed is too large" in reasons["train/boat/bomb.png"]


def test_a_junk_zip_names_twenty_skipped_members_then_counts_the_rest(tmp_path, caplog):
    """50 junk members among 2 images: 20 named in the log (and as warnings), one line for the
    other 30, while the dataset's skipped list keeps all 50 with their reasons."""
    import logging

    path = tmp_path / "junk.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(2):
            zf.writestr(f"cat/ok{i}.png", png_bytes(np.full((32, 32, 3), 40 * i, np.uint8)))
        for i in range(50):
            zf.writestr(f"cat/junk{i:02d}.jpg", b"not a picture %d" % i)
    with caplog.at_level(logging.WARNING, logger="mlcore.data.datasets"):
        with pytest.warns(UserWarning) as record:
            ds = load_dataset(path)
    lines = [r.getMessage() for r in caplog.records if r.name == "mlcore.data.datasets"]
    assert [str(w.message) for w in record] == lines and len(lines) == 21
    assert all("skipped cat/junk" in line for line in lines[:20])
    assert lines[20].endswith("skipped 30 more members (50 in all; the dataset's skipped list "
                              "names each with its reason)")  # fmt: skip
    assert len(ds) == 2 and len(ds.skipped) == 50
    assert all("readable image" in reason for _, reason in ds.skipped)
