import os
import urllib.error

import pytest
import torch

import dyninf.data.cifar as data_module
from dyninf.data.cifar import (CIFAR10_CLASSES, SOURCE_VARIABLE, ImageDataset, check_cifar10, load_cifar10,
                         read_cache, read_image_folder, synthetic_dataset, write_cache)
from conftest import class_colour, write_image_folder


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_read_image_folder_decodes_images_labels_and_order(kind, tiny_folder, tiny_archive):
    dataset = read_image_folder(tiny_folder if kind == "folder" else tiny_archive)
    assert dataset.classes == CIFAR10_CLASSES
    assert dataset.train_images.shape == (30, 3, 32, 32) and dataset.train_images.dtype == torch.uint8
    assert dataset.test_images.shape == (20, 3, 32, 32)
    assert dataset.train_labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert dataset.train_labels.dtype == torch.int64
    # image 2 of class 4 (PNG is lossless): its known colour in every pixel, channels first
    image = dataset.train_images[4 * 3 + 2]
    assert image[:, 5, 7].tolist() == list(class_colour(4, 2))
    assert (image == image[:, :1, :1]).all()


def test_read_image_folder_reads_jpeg(tmp_path):
    folder = write_image_folder(tmp_path / "jpeg", {"train": 1, "test": 1}, fmt="JPEG")
    dataset = read_image_folder(folder)
    expected = torch.tensor(class_colour(3, 0), dtype=torch.float32)
    assert (dataset.train_images[3, :, 16, 16].float() - expected).abs().max() <= 3  # lossy


def test_missing_source_names_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train/<class>"):
        read_image_folder(tmp_path / "nowhere.tar.gz")


def test_broken_archive_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b this is not a gzip stream" * 10)
    with pytest.raises(ValueError, match="cannot read the image archive"):
        read_image_folder(broken)


def test_truncated_archive_is_a_clear_error(tiny_archive, tmp_path):
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(tiny_archive.read_bytes()[:-200])
    with pytest.raises(ValueError, match="cannot read"):
        read_image_folder(truncated)


def test_unknown_class_folder_is_an_error(tmp_path):
    folder = write_image_folder(tmp_path / "odd", {"train": 1, "test": 1},
                                classes=CIFAR10_CLASSES[:9] + ("lorry",))
    with pytest.raises(ValueError, match="lorry"):
        read_image_folder(folder)


def test_missing_split_is_an_error(tmp_path):
    folder = write_image_folder(tmp_path / "train_only", {"train": 1})
    with pytest.raises(ValueError, match=r"no images under test/"):
        read_image_folder(folder)


def test_wrong_image_size_is_an_error(tmp_path):
    folder = write_image_folder(tmp_path / "big", {"train": 1, "test": 1}, size=(64, 48))
    with pytest.raises(ValueError, match="expected 32x32 images"):
        read_image_folder(folder)


def test_undecodable_image_is_an_error(tiny_folder):
    (tiny_folder / "train" / "cat" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot decode the image .*cat"):
        read_image_folder(tiny_folder)


def test_check_cifar10_wants_the_full_balanced_set(tiny_folder):
    with pytest.raises(ValueError, match="expected 5000 train images per class"):
        check_cifar10(read_image_folder(tiny_folder))


def test_cache_round_trip_and_damage_detection(tmp_path):
    dataset = synthetic_dataset(4, 2)
    path = tmp_path / "cache.pt"
    write_cache(dataset, path)
    loaded = read_cache(path)
    assert torch.equal(loaded.train_images, dataset.train_images)
    assert torch.equal(loaded.test_labels, dataset.test_labels) and loaded.classes == dataset.classes
    raw = bytearray(path.read_bytes())
    # flip one byte inside the stored image data (same file size, still a valid zip record)
    where = raw.find(dataset.train_images.numpy().tobytes()[:64])
    assert where > 0
    raw[where + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert read_cache(path) is None
    path.write_bytes(bytes(raw[: len(raw) // 2]))
    assert read_cache(path) is None
    assert read_cache(tmp_path / "missing.pt") is None


def test_interrupted_cache_write_leaves_nothing(tmp_path, monkeypatch):
    def crash(obj, file):
        file.write(b"half a cache")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        write_cache(synthetic_dataset(2, 1), tmp_path / "cache.pt")
    assert list(tmp_path.iterdir()) == []


def test_damaged_cache_is_rebuilt_from_the_source(tiny_archive, tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "check_cifar", lambda dataset, spec: None)  # tiny, not full size
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "cifar10-uint8.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="damaged"):
        dataset = load_cifar10(tiny_archive, cache_dir=cache_dir)
    assert len(dataset.train_images) == 30
    assert read_cache(cache_dir / "cifar10-uint8.pt") is not None


def test_environment_variable_names_the_source(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "check_cifar", lambda dataset, spec: None)
    monkeypatch.setenv(SOURCE_VARIABLE, str(tiny_folder))
    assert len(load_cifar10(cache_dir=tmp_path / "cache").test_images) == 20


def test_a_full_sized_wrong_source_is_rejected(tiny_archive, tmp_path):
    with pytest.raises(ValueError, match="expected 5000 train images per class"):
        load_cifar10(tiny_archive, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "cifar10-uint8.pt").exists()


def test_offline_without_source_names_both_ways(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    monkeypatch.delenv(SOURCE_VARIABLE, raising=False)
    with pytest.raises(RuntimeError, match=SOURCE_VARIABLE) as error:
        load_cifar10(cache_dir=tmp_path / "cache")
    assert "internet" in str(error.value)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".lock"]  # the temporary download folder is gone


def test_balanced_subset_is_balanced_and_seeded():
    dataset = synthetic_dataset(20, 10)
    a, b = dataset.subset(5, 3, seed=1), dataset.subset(5, 3, seed=1)
    assert torch.bincount(a.train_labels).tolist() == [5] * 10
    assert torch.bincount(a.test_labels).tolist() == [3] * 10
    assert torch.equal(a.train_images, b.train_images)
    assert not torch.equal(a.train_images, dataset.subset(5, 3, seed=2).train_images)
    assert len(dataset.subset(None, 3).train_images) == 200
    with pytest.raises(ValueError, match="fewer than the 21 per class"):
        dataset.subset(21, 3)
    assert len(a.held_out_images) == 0 and a.held_out_images.shape[1:] == (3, 32, 32)


def test_held_out_images_are_unused_training_images_and_leave_the_subset_unchanged():
    dataset = synthetic_dataset(20, 10)
    dataset.train_images[:, 0, 0, 0] = torch.arange(200, dtype=torch.uint8)   # tag each image
    plain, with_held_out = dataset.subset(5, 3, seed=1), dataset.subset(5, 3, seed=1, held_out_per_class=4)
    assert torch.equal(plain.train_images, with_held_out.train_images)
    assert torch.equal(plain.test_images, with_held_out.test_images)
    assert torch.bincount(with_held_out.held_out_labels).tolist() == [4] * 10
    used, held_out = (set(d[:, 0, 0, 0].tolist()) for d in (plain.train_images, with_held_out.held_out_images))
    assert len(held_out) == 40 and not used & held_out
    with pytest.raises(ValueError, match="fewer than the 21 per class"):
        dataset.subset(17, 3, held_out_per_class=4)
    with pytest.raises(ValueError, match="no images to hold out"):
        dataset.subset(None, 3, held_out_per_class=4)


@pytest.mark.skipif(not os.environ.get(SOURCE_VARIABLE)
                    and not (data_module.data_dir() / "cifar10" / "cifar10-uint8.pt").exists(),
                    reason=f"CIFAR-10 not available (set {SOURCE_VARIABLE})")
def test_real_cifar10_counts_order_and_cache(monkeypatch):
    dataset = load_cifar10()  # decodes into data/cifar10 once; the notebooks reuse that cache
    assert dataset.classes == CIFAR10_CLASSES
    assert dataset.train_images.shape == (50_000, 3, 32, 32)
    assert dataset.test_images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(dataset.test_labels).tolist() == [1000] * 10

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached load must not decode images again")

    monkeypatch.setattr(data_module, "read_image_folder", no_decoding)
    monkeypatch.setattr(data_module, "_download_with_torchvision", no_decoding)
    again = load_cifar10()
    assert torch.equal(again.test_images[:100], dataset.test_images[:100])


def test_synthetic_dataset_shapes():
    dataset = synthetic_dataset(4, 2, num_classes=3)
    assert isinstance(dataset, ImageDataset)
    assert dataset.train_images.shape == (12, 3, 32, 32) and dataset.train_images.dtype == torch.uint8
    assert dataset.classes == ("class0", "class1", "class2")


def test_cifar100_is_found_like_cifar10_under_its_own_name(tmp_path, monkeypatch):
    from dyninf.data.cifar import CIFAR100_CLASSES, load_cifar100

    folder = write_image_folder(tmp_path / "c100", {"train": 1, "test": 1}, classes=CIFAR100_CLASSES)
    monkeypatch.setenv("CIFAR100_SOURCE", str(folder))
    monkeypatch.setenv(SOURCE_VARIABLE, str(tmp_path / "not-this-one"))
    with pytest.raises(ValueError, match="expected 500 train images per class"):   # full size is checked
        load_cifar100(cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "cifar100-uint8.pt").exists()
    monkeypatch.setattr(data_module, "check_cifar", lambda dataset, spec: None)
    dataset = load_cifar100(cache_dir=tmp_path / "cache")
    assert dataset.classes == CIFAR100_CLASSES and dataset.train_labels.tolist() == list(range(100))
    assert dataset.train_images[12, :, 0, 0].tolist() == list(class_colour(12, 0))   # the class order holds
    assert (tmp_path / "cache" / "cifar100-uint8.pt").exists()


def test_cifar100_offline_names_its_own_variable_and_unknown_sets_are_errors(tmp_path, monkeypatch):
    import torchvision.datasets

    from dyninf.data.cifar import load_cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    monkeypatch.delenv("CIFAR100_SOURCE", raising=False)
    with pytest.raises(RuntimeError, match="CIFAR-100 is not cached .*CIFAR100_SOURCE"):
        load_cifar("cifar100", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="unknown data set 'svhn'; known: cifar10, cifar100"):
        load_cifar("svhn")
