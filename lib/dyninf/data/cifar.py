"""CIFAR-10 (and CIFAR-100) as in-memory uint8 tensors: found, decoded once, cached atomically,
checked.

Where the images come from, in order (CIFAR-100: ``cifar100`` and ``CIFAR100_SOURCE``):
1. the cache ``data/cifar10/cifar10-uint8.pt`` (decoded earlier; under a second to load);
2. ``source`` (argument) or the environment variable ``CIFAR10_SOURCE``: an ImageFolder-layout
   folder or ``.tar.gz`` with ``train/<class>/*`` and ``test/<class>/*`` (any image PIL reads);
3. torchvision's ``CIFAR10(download=True)`` when the machine is online.
"""
from __future__ import annotations

import io
import os
import tarfile
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from dyninf.utils.io import atomic_torch_save, folder_lock, tidy_folder
from dyninf.utils.paths import data_dir

# torchvision's order; labels are indices into this tuple.
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_PER_CLASS = {"train": 5000, "test": 1000}
# torchvision's order (alphabetical): CIFAR-100's 100 fine labels.
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
IMAGE_SHAPE = (3, 32, 32)
SOURCE_VARIABLE = "CIFAR10_SOURCE"
_CACHE_FORMAT = 1
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class CifarSpec:
    """What a complete CIFAR data set looks like and where it comes from."""

    name: str                       # folder under data/, and the cache's name
    title: str                      # for messages
    classes: tuple[str, ...]
    per_class: dict[str, int]       # images per class in each split
    source_variable: str            # environment variable naming an ImageFolder source
    torchvision_class: str          # the torchvision.datasets class that downloads it


DATASETS = {
    "cifar10": CifarSpec("cifar10", "CIFAR-10", CIFAR10_CLASSES, CIFAR10_PER_CLASS, SOURCE_VARIABLE,
                         "CIFAR10"),
    "cifar100": CifarSpec("cifar100", "CIFAR-100", CIFAR100_CLASSES, {"train": 500, "test": 100},
                          "CIFAR100_SOURCE", "CIFAR100"),
}


def dataset_spec(name: str) -> CifarSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclass
class ImageDataset:
    """A labelled image classification data set held in memory.

    Images are uint8 tensors of shape (N, 3, H, W); labels are int64 class indices into ``classes``.
    ``held_out_*``: training-set images left out of training (a subset can keep some), for
    decisions that must be tuned on unseen images without touching the test set; empty by default.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    held_out_images: torch.Tensor = field(default_factory=lambda: torch.empty(0, *IMAGE_SHAPE, dtype=torch.uint8))
    held_out_labels: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    def __repr__(self) -> str:
        return (f"ImageDataset({len(self.classes)} classes, train {tuple(self.train_images.shape)}, "
                f"test {tuple(self.test_images.shape)})")

    def subset(self, train_per_class: int | None, test_per_class: int | None,
               seed: int = 0, held_out_per_class: int = 0) -> "ImageDataset":
        """A class-balanced random subset (``None`` keeps a split whole), the same for the same
        seed, keeping ``held_out_per_class`` of the training images it leaves out as held-out."""
        generator = torch.Generator().manual_seed(seed)
        train, held_out = _balanced_indices(self.train_labels, train_per_class, len(self.classes),
                                            generator, held_out_per_class)
        test, _ = _balanced_indices(self.test_labels, test_per_class, len(self.classes), generator)
        return ImageDataset(self.train_images[train], self.train_labels[train],
                            self.test_images[test], self.test_labels[test], self.classes,
                            self.train_images[held_out], self.train_labels[held_out])


def _balanced_indices(labels: torch.Tensor, per_class: int | None, num_classes: int,
                      generator: torch.Generator, extra_per_class: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` random indices of each class, and ``extra_per_class`` more that are not
    among them."""
    if per_class is None:
        if extra_per_class:
            raise ValueError("a split kept whole leaves no images to hold out")
        return torch.arange(len(labels)), torch.arange(0)
    chosen, extra = [], []
    for label in range(num_classes):
        members = (labels == label).nonzero().squeeze(1)
        if len(members) < per_class + extra_per_class:
            raise ValueError(f"class {label} has {len(members)} images, fewer than the "
                             f"{per_class + extra_per_class} per class asked for")
        shuffled = members[torch.randperm(len(members), generator=generator)]
        chosen.append(shuffled[:per_class])
        extra.append(shuffled[per_class:per_class + extra_per_class])
    return torch.cat(chosen).sort().values, torch.cat(extra).sort().values


def load_cifar(name: str = "cifar10", source: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None) -> ImageDataset:
    """CIFAR-10 or CIFAR-100 (``name``) as uint8 tensors (see the module docstring for where it
    comes from)."""
    spec = dataset_spec(name)
    cache_path = Path(cache_dir or data_dir() / spec.name) / f"{spec.name}-uint8.pt"
    cached = read_cache(cache_path) if cache_path.exists() else None
    if cached is not None:
        tidy_folder(cache_path.parent)   # what a write killed earlier left
        return cached
    # one process decodes; another one started meanwhile waits, then reads its cache
    with folder_lock(cache_path.parent, f"decoding {spec.title} into its cache"):
        cached = read_cache(cache_path) if cache_path.exists() else None
        if cached is not None:
            return cached
        if cache_path.exists():
            warnings.warn(f"the {spec.title} cache {cache_path} is damaged; rebuilding it")
        source = source or os.environ.get(spec.source_variable)
        if source:
            dataset = read_image_folder(source, spec.classes)
        else:
            dataset = _download_with_torchvision(cache_path.parent, spec)
        check_cifar(dataset, spec)
        write_cache(dataset, cache_path)
        return dataset


def load_cifar10(source: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> ImageDataset:
    """CIFAR-10 as uint8 tensors (see the module docstring for where it comes from)."""
    return load_cifar("cifar10", source, cache_dir)


def load_cifar100(source: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None) -> ImageDataset:
    """CIFAR-100 (its 100 fine labels) as uint8 tensors, found like CIFAR-10 (``CIFAR100_SOURCE``,
    ``data/cifar100/``, torchvision)."""
    return load_cifar("cifar100", source, cache_dir)


def check_cifar(dataset: ImageDataset, spec: CifarSpec = DATASETS["cifar10"]) -> None:
    """Raise ValueError unless ``dataset`` is all of the data set ``spec`` describes: shapes,
    class order, balanced counts."""
    if tuple(dataset.classes) != spec.classes:
        raise ValueError(f"expected the {spec.title} classes {spec.classes}, got {dataset.classes}")
    for split in _SPLITS:
        images, labels = getattr(dataset, f"{split}_images"), getattr(dataset, f"{split}_labels")
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"expected {split} images as uint8 (N, 3, 32, 32), "
                             f"got {images.dtype} {tuple(images.shape)}")
        counts = torch.bincount(labels, minlength=len(spec.classes)).tolist()
        expected = spec.per_class[split]
        if counts != [expected] * len(spec.classes):
            raise ValueError(f"expected {expected} {split} images per class "
                             f"({expected * len(spec.classes)} in all), got {counts}")


def check_cifar10(dataset: ImageDataset) -> None:
    """Raise ValueError unless ``dataset`` is all of CIFAR-10."""
    check_cifar(dataset, DATASETS["cifar10"])


# --- Reading an ImageFolder-layout folder or archive -------------------------------------------

def read_image_folder(source: str | os.PathLike,
                      classes: Iterable[str] = CIFAR10_CLASSES) -> ImageDataset:
    """Decode ``train/<class>/*`` and ``test/<class>/*`` from a folder or a ``.tar.gz``.

    Images are sorted by split, class (in the order of ``classes``) and file name.
    """
    source = Path(source)
    classes = tuple(classes)
    if source.is_dir():
        entries = _folder_entries(source)
    elif source.is_file():
        entries = _archive_entries(source)
    else:
        raise FileNotFoundError(f"data source {source} does not exist; expected a folder or "
                                f".tar.gz with train/<class>/* and test/<class>/*")
    found: dict[str, list[tuple[int, str, np.ndarray]]] = {split: [] for split in _SPLITS}
    unknown = set()
    for split, class_name, name, read in entries:
        if class_name not in classes:
            unknown.add(class_name)
            continue
        found[split].append((classes.index(class_name), name, _decode(read(), f"{source}: {name}")))
    if unknown:
        raise ValueError(f"{source} has class folders {sorted(unknown)} that are not among the "
                         f"expected classes {classes}")
    arrays = {}
    for split in _SPLITS:
        if not found[split]:
            raise ValueError(f"{source} holds no images under {split}/<class>/; expected an "
                             f"ImageFolder layout train/<class>/*, test/<class>/*")
        found[split].sort(key=lambda item: (item[0], item[1]))
        arrays[f"{split}_images"] = torch.from_numpy(
            np.stack([image for _, _, image in found[split]])).permute(0, 3, 1, 2).contiguous()
        arrays[f"{split}_labels"] = torch.tensor([label for label, _, _ in found[split]],
                                                 dtype=torch.int64)
    return ImageDataset(classes=classes, **arrays)


def _split_path(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """(split, class) for a path ``.../<split>/<class>/<file>``, else None."""
    if len(parts) >= 3 and parts[-3] in _SPLITS and not parts[-1].startswith("."):
        return parts[-3], parts[-2]
    return None


def _folder_entries(root: Path) -> Iterator:
    for path in sorted(root.rglob("*")):
        where = _split_path(path.relative_to(root).parts) if path.is_file() else None
        if where:
            yield (*where, str(path.relative_to(root)), path.read_bytes)


def _archive_entries(archive: Path) -> Iterator:
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                where = _split_path(PurePosixPath(member.name).parts) if member.isfile() else None
                if where:
                    data = tar.extractfile(member).read()
                    yield (*where, member.name, lambda data=data: data)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ValueError(f"cannot read the image archive {archive} ({error}); expected a .tar.gz "
                         f"with train/<class>/* and test/<class>/*") from error


def _decode(data: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("RGB"))
    except Exception as error:  # PIL raises many types for broken files
        raise ValueError(f"cannot decode the image {name}: {error}") from error
    if array.shape[:2] != IMAGE_SHAPE[1:]:
        raise ValueError(f"expected 32x32 images, {name} is {array.shape[1]}x{array.shape[0]}")
    return array


def _download_with_torchvision(cache_dir: Path, spec: CifarSpec = DATASETS["cifar10"]) -> ImageDataset:
    import torchvision.datasets

    download = getattr(torchvision.datasets, spec.torchvision_class)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Download into a temporary folder so that a broken download never stays on disk.
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        try:
            splits = {split: download(tmp, train=(split == "train"), download=True)
                      for split in _SPLITS}
        except Exception as error:
            raise RuntimeError(
                f"{spec.title} is not cached in {cache_dir} and could not be downloaded ({error}). "
                f"Either set the environment variable {spec.source_variable} (or pass source=) to an "
                f"ImageFolder-layout folder or .tar.gz (train/<class>/*, test/<class>/*), or run "
                f"once on a machine that can reach the internet so torchvision downloads it."
            ) from error
    arrays = {}
    for split, dataset in splits.items():
        arrays[f"{split}_images"] = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        arrays[f"{split}_labels"] = torch.tensor(dataset.targets, dtype=torch.int64)
    return ImageDataset(classes=tuple(splits["train"].classes), **arrays)


# --- The cache ------------------------------------------------------------------------------------

def _checksum(tensors: Iterable[torch.Tensor]) -> int:
    value = 0
    for tensor in tensors:
        value = zlib.crc32(tensor.contiguous().numpy().tobytes(), value)
    return value


def _tensors(dataset: ImageDataset) -> list[torch.Tensor]:
    return [dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels]


def write_cache(dataset: ImageDataset, path: str | os.PathLike) -> None:
    """Save ``dataset`` with a checksum; written to a temporary file first, then renamed."""
    path = Path(path)
    payload = {"format": _CACHE_FORMAT, "classes": list(dataset.classes),
               "checksum": _checksum(_tensors(dataset)),
               **{name: getattr(dataset, name) for name in
                  ("train_images", "train_labels", "test_images", "test_labels")}}
    atomic_torch_save(payload, path)


def read_cache(path: str | os.PathLike) -> ImageDataset | None:
    """The cached data set, or None when the file is missing, unreadable or fails its checksum."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        dataset = ImageDataset(payload["train_images"], payload["train_labels"],
                               payload["test_images"], payload["test_labels"],
                               tuple(payload["classes"]))
        if payload["format"] == _CACHE_FORMAT and payload["checksum"] == _checksum(_tensors(dataset)):
            return dataset
    except Exception:  # a damaged file can fail in many ways; all mean "rebuild"
        pass
    return None


# --- A tiny synthetic data set for fast tests ------------------------------------------------------

def synthetic_dataset(train_per_class: int = 32, test_per_class: int = 8, num_classes: int = 10,
                      seed: int = 0) -> ImageDataset:
    """Learnable 32x32 images: each class has its own colour and stripe direction, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    colours = torch.rand(num_classes, 3, 1, 1, generator=generator) * 160 + 48
    ramp = torch.linspace(-40, 40, 32)

    def make(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        stripes = torch.stack([ramp.view(1, 32).expand(32, 32) if c % 2 else
                               ramp.view(32, 1).expand(32, 32) for c in labels.tolist()])
        noise = torch.randn(len(labels), 3, 32, 32, generator=generator) * 20
        images = colours[labels] + stripes.unsqueeze(1) + noise
        return images.clamp(0, 255).to(torch.uint8), labels

    train_images, train_labels = make(train_per_class)
    test_images, test_labels = make(test_per_class)
    return ImageDataset(train_images, train_labels, test_images, test_labels,
                        tuple(f"class{c}" for c in range(num_classes)))
