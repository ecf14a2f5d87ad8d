import os
import shutil
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dyninf.network.backbones import cifar_resnet
from dyninf.data.cifar import CIFAR10_CLASSES


def settled_resnet(depth: int = 20, seed: int = 0, bottleneck: bool = False):
    """An eval-mode CIFAR ResNet whose BatchNorm statistics are not the identity."""
    torch.manual_seed(seed)
    net = cifar_resnet(depth, bottleneck=bottleneck).train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 3, 32, 32))
    return net.eval()


# The system Chromium that the browser tests drive through Playwright (Playwright's own browser
# download needs the internet). CI sets DYNINF_REQUIRE_BROWSER: there a missing Chromium fails a
# browser test instead of skipping it.
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("DYNINF_REQUIRE_BROWSER"),
                                    reason="no Chromium here (`apt-get install chromium`, or set CHROMIUM)")


def free_port() -> int:
    """A localhost port nothing listens on now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def set_to_the_tiny_profile(nb) -> None:
    """A course notebook (nbformat) set to the tiny profile in its parameters cell, as a student
    would set it to check a task without waiting for training."""
    parameters = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert 'profile = "quick"' in parameters.source, parameters.source
    parameters.source = parameters.source.replace('profile = "quick"', 'profile = "tiny"', 1)


def class_colour(label: int, index: int) -> tuple[int, int, int]:
    """A distinct, known colour for image ``index`` of class ``label``."""
    return (20 * label, 7 * index, 255 - 20 * label)


def write_image_folder(root: Path, per_class: dict[str, int], classes=CIFAR10_CLASSES,
                       size=(32, 32), fmt="PNG") -> Path:
    """An ImageFolder tree root/<split>/<class>/<i>.png of solid, known colours."""
    for split, count in per_class.items():
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                Image.new("RGB", size, class_colour(label, index)).save(
                    folder / f"{index:04d}.{fmt.lower()}", fmt)
    return root


def tar_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return archive


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "tiny", {"train": 3, "test": 2})


@pytest.fixture
def tiny_archive(tiny_folder, tmp_path) -> Path:
    return tar_folder(tiny_folder, tmp_path / "tiny.tar.gz")


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs the suite on $(JOBS) workers) each worker takes its share
    of the CPU threads, and so do the notebook kernels and other processes it starts: workers that
    each used every core would contend for them (oneDNN slows down badly when oversubscribed)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def pytest_collection_modifyitems(config, items):
    """The slow (``notebook``) tests first, so that parallel workers do not end with one of them
    left running alone; ``cuda`` tests need a GPU: skipped without one (`make gpu-check` runs
    them on one)."""
    items.sort(key=lambda item: "notebook" not in item.keywords)   # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU here); `make gpu-check` runs it on one")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
