"""Shared fixtures: an isolated environment and tiny synthetic chest X-ray datasets.

Every test runs with its own ``CXR_CACHE_DIR`` and an empty ``KAGGLEHUB_CACHE``, without
``CXR_DATA_DIR`` / ``CXR_FAST``, and with outgoing network connections refused, so nothing
depends on (or writes to) the real data, the user's cache or the internet.

Synthetic images are random low-frequency blobs (an 8x8 random grid upscaled bilinearly,
plus a little noise), one seed per image: different seeds give unrelated perceptual
hashes and thumbnails, while :func:`near_copy` makes images the library must treat as
near-duplicates of a base image.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: Side of the synthetic images (the database's are 299 px; small keeps the suite fast).
IMG_SIZE = 48

#: Canonical class names in label order (a copy, so a broken library constant shows up).
CANONICAL = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")

#: Folder names of the older flat releases of the database.
OLD_DIRNAMES = {"COVID": "COVID-19", "Normal": "NORMAL", "Viral Pneumonia": "Viral Pneumonia"}

WRAPPER = "COVID-19_Radiography_Dataset"


# --------------------------------------------------------------------------- environment


@dataclass
class Env:
    cache: Path  # CXR_CACHE_DIR
    kagglehub: Path  # KAGGLEHUB_CACHE (empty)


#: What every test runs without (the user's data, mode, runs folder and Kaggle credentials).
UNSET_VARIABLES = (
    "CXR_DATA_DIR",
    "CXR_FAST",
    "CXR_KAGGLE_HANDLE",
    "CXR_RUNS_DIR",
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "KAGGLE_API_TOKEN",
)


def unset_for_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove :data:`UNSET_VARIABLES` until ``monkeypatch`` undoes, which also takes back any
    value the code under test sets. Set first, then delete: ``delenv(raising=False)`` of an
    unset variable records nothing, so a value set later (the first cell sets ``CXR_DATA_DIR``)
    would outlive the test and reach the notebooks that pytest runs next."""
    for var in UNSET_VARIABLES:
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Env:
    cache = tmp_path_factory.mktemp("cxr-cache")
    kagglehub_cache = tmp_path_factory.mktemp("kagglehub-cache")
    monkeypatch.setenv("CXR_CACHE_DIR", str(cache))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(kagglehub_cache))
    unset_for_the_test(monkeypatch)

    # Belt and braces: no test may open an internet connection (kagglehub would try one
    # for a handle that is not in its cache). Loopback stays open for local servers.
    real_connect = socket.socket.connect

    def no_network(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0]) if isinstance(address, tuple) else ""  # type: ignore[index]
            if host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("127."):
                raise OSError(f"network access is disabled in the test suite ({host})")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return Env(cache, kagglehub_cache)


# --------------------------------------------------------------------------- images


def pattern(seed: int, size: int | tuple[int, int] = IMG_SIZE) -> np.ndarray:
    """A distinct random low-frequency gray image (``uint8``, ``(height, width)``) per seed."""
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    low = (rng.random((8, 8)) * 255).astype(np.uint8)
    up = np.asarray(Image.fromarray(low).resize((width, height), Image.BILINEAR), dtype=np.float64)
    up += rng.normal(0.0, 3.0, size=up.shape)
    return np.clip(np.round(up), 0, 255).astype(np.uint8)


def save(path: Path, image: np.ndarray | Image.Image, fmt: str | None = None, **params: object) -> Path:
    """Save an array or image (creating folders); ``fmt`` overrides the extension's format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, format=fmt, **params)
    return path


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def near_copy(path: Path, base: np.ndarray, kind: str, seed: int = 0) -> Path:
    """Write a near-duplicate of ``base``: +-2 brightness noise, JPEG quality 90, or a
    resize by 4 pixels. Returns the path written (the suffix is ``.jpg`` for ``jpeg``)."""
    if kind == "noise":
        rng = np.random.default_rng(10_000 + seed)
        noisy = np.clip(base.astype(np.int16) + rng.integers(-2, 3, size=base.shape), 0, 255).astype(np.uint8)
        return save(path, noisy)
    if kind == "jpeg":
        return save(path.with_suffix(".jpg"), base, "JPEG", quality=90)
    if kind == "resize":
        h, w = base.shape
        return save(path, Image.fromarray(base).resize((w + 4, h + 4), Image.BILINEAR))
    raise ValueError(kind)


def mask_pattern(seed: int, size: int = 64) -> np.ndarray:
    """A binary lung-mask-like image (0 or 255): two rectangles whose extent depends on the seed."""
    rng = np.random.default_rng(50_000 + seed)
    mask = np.zeros((size, size), np.uint8)
    top, bottom = int(rng.integers(4, 14)), int(rng.integers(size - 14, size - 4))
    mask[top:bottom, 6 : size // 2 - 3] = 255
    mask[top + 2 : bottom - 2, size // 2 + 3 : size - 6] = 255
    return mask


# --------------------------------------------------------------------------- bad files


def plant_bad_files(folder: Path, prefix: str = "bad") -> list[Path]:
    """Write one file of every undecodable kind into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    good_png = png_bytes(pattern(777))
    good_jpg = jpeg_bytes(pattern(778))
    rng = np.random.default_rng(779)
    random_bytes = rng.integers(0, 256, size=3000, dtype=np.uint8).tobytes()
    assert not random_bytes.startswith(b"\xff\xd8")  # not accidentally a JPEG header
    files = {
        f"{prefix}-empty.png": b"",
        f"{prefix}-truncated.png": good_png[: len(good_png) // 2],
        f"{prefix}-text.png": b"this is not an image, just some notes\n" * 5,
        f"{prefix}-page.png": b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
        b"<body><h1>Not Found</h1></body></html>\n",
        f"{prefix}-random.jpg": random_bytes,
        f"{prefix}-truncated.jpg": good_jpg[: len(good_jpg) // 2],
    }
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def plant_ignored_files(folder: Path) -> list[Path]:
    """Non-image files a class folder may hold (metadata); the scan must not list them."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in (
        ("notes.txt", b"some notes\n"),
        ("metadata.xlsx", b"PK\x03\x04 not really a spreadsheet"),
        ("list.csv", b"FILE NAME,FORMAT\nx,PNG\n"),
    ):
        (folder / name).write_bytes(data)
        out.append(folder / name)
    return out


# --------------------------------------------------------------------------- datasets


@dataclass
class SynthDataset:
    """A synthetic dataset on disk."""

    path: Path  # the folder to hand to scan() / CXRData.load()
    root: Path  # the folder that holds the class folders
    files: dict[str, list[str]] = field(default_factory=dict)  # class -> paths relative to root
    masks: dict[str, str] = field(default_factory=dict)  # image path -> mask path (relative)
    dirs: dict[str, Path] = field(default_factory=dict)  # class -> folder holding its images

    @property
    def counts(self) -> dict[str, int]:
        return {c: len(self.files[c]) for c in CANONICAL if c in self.files}

    @property
    def paths(self) -> list[str]:
        return sorted(p for ps in self.files.values() for p in ps)

    def label_of(self, rel: str) -> str:
        return next(c for c, ps in self.files.items() if rel in ps)

    def add_image(self, label: str, name: str, pixels: np.ndarray, fmt: str | None = None, **params: object) -> str:
        path = save(self.dirs[label] / name, pixels, fmt, **params)
        rel = path.relative_to(self.root).as_posix()
        self.files[label].append(rel)
        return rel


@functools.cache
def _pattern_png(seed: int, size: int) -> bytes:
    """PNG bytes of :func:`pattern` (memoized: many tests write the same images)."""
    return png_bytes(pattern(seed, size))


@functools.cache
def _mask_png(seed: int) -> bytes:
    return png_bytes(mask_pattern(seed))


def build_dataset(
    base: Path,
    counts: dict[str, int],
    *,
    layout: str = "current",
    dirnames: dict[str, str] | None = None,
    wrapper: str | None = WRAPPER,
    masks: bool = False,
    seed: int = 0,
    size: int = IMG_SIZE,
    metadata: bool = True,
) -> SynthDataset:
    """Write a dataset: ``current`` layout ``<root>/<Class>/images/*.png`` (+ ``masks/``)
    or ``flat`` layout ``<root>/<Class>/*.png``; ``wrapper`` adds an enclosing folder."""
    assert layout in ("current", "flat")
    root = base / wrapper if wrapper else base
    root.mkdir(parents=True, exist_ok=True)
    ds = SynthDataset(path=base, root=root)
    for label, n in counts.items():
        dirname = (dirnames or {}).get(label, label)
        class_dir = root / dirname
        image_dir = class_dir / "images" if layout == "current" else class_dir
        image_dir.mkdir(parents=True, exist_ok=True)
        ds.dirs[label] = image_dir
        ds.files[label] = []
        if masks:
            assert layout == "current"
            (class_dir / "masks").mkdir(exist_ok=True)
        for i in range(n):
            s = seed * 100_000 + CANONICAL.index(label) * 1_000 + i
            image = image_dir / f"{dirname}-{i + 1}.png"
            image.write_bytes(_pattern_png(s, size))
            rel = image.relative_to(root).as_posix()
            ds.files[label].append(rel)
            if masks:
                mask = class_dir / "masks" / image.name
                mask.write_bytes(_mask_png(s))
                ds.masks[rel] = mask.relative_to(root).as_posix()
        if metadata and layout == "current":
            (root / f"{dirname}.metadata.xlsx").write_bytes(b"PK\x03\x04 fake spreadsheet")
            plant_ignored_files(image_dir)
    if metadata:
        (root / "README.md.txt").write_text("COVID-19 Radiography Database (synthetic test copy)\n")
    return ds


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., SynthDataset]:
    """Factory: ``make_dataset(counts, name="data", **build_dataset options)``."""

    def make(counts: dict[str, int] | None = None, *, name: str = "data", **kwargs: object) -> SynthDataset:
        counts = counts if counts is not None else dict.fromkeys(CANONICAL, 10)
        return build_dataset(tmp_path / name, counts, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def current_ds(make_dataset: Callable[..., SynthDataset]) -> SynthDataset:
    """Current layout, four classes of 10 images, lung masks, metadata files, wrapper folder."""
    return make_dataset(masks=True)


@pytest.fixture
def flat_ds(make_dataset: Callable[..., SynthDataset]) -> SynthDataset:
    """Older flat release: COVID-19/, NORMAL/, Viral Pneumonia/ (three classes), no wrapper."""
    return make_dataset(
        {"COVID": 9, "Normal": 12, "Viral Pneumonia": 8}, layout="flat", dirnames=OLD_DIRNAMES, wrapper=None
    )


@dataclass
class DupDataset:
    ds: SynthDataset
    groups: list[set[str]]  # planted near-duplicate groups (relative paths)


def build_dup_dataset(base: Path, per_class: int = 14) -> DupDataset:
    """Four classes of distinct images plus planted near-duplicate pairs and triples
    (each group within one class, as in the real database)."""
    ds = build_dataset(base, dict.fromkeys(CANONICAL, per_class), masks=False)
    plan = {
        "COVID": [("noise",), ("jpeg",), ("noise", "resize")],
        "Lung_Opacity": [("resize",), ("jpeg", "noise")],
        "Normal": [("noise",), ("resize",), ("jpeg",)],
        "Viral Pneumonia": [("jpeg", "resize"), ("noise",)],
    }
    groups = []
    for label, plan_groups in plan.items():
        for g, kinds in enumerate(plan_groups):
            s = 900_000 + CANONICAL.index(label) * 100 + g
            base_px = pattern(s)
            base_rel = ds.add_image(label, f"dup-{g}-a.png", base_px)
            members = {base_rel}
            for k, kind in enumerate(kinds):
                path = near_copy(ds.dirs[label] / f"dup-{g}-{'bcd'[k]}.png", base_px, kind, seed=s + k)
                rel = path.relative_to(ds.root).as_posix()
                ds.files[label].append(rel)
                members.add(rel)
            groups.append(members)
    return DupDataset(ds, groups)


@pytest.fixture
def dup_ds(tmp_path: Path) -> DupDataset:
    return build_dup_dataset(tmp_path / "dups")


# --------------------------------------------------------------------------- large image


@pytest.fixture(scope="session")
def large_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12000 x 9000 gray PNG (108 megapixels, above Pillow's default bomb warning)."""
    path = tmp_path_factory.mktemp("large") / "large.png"
    pixels = np.full((9000, 12000), 30, np.uint8)
    pixels[1000:3000, 2000:6000] = 200
    pixels[5000:8000, 7000:11000] = 120
    Image.fromarray(pixels).save(path, compress_level=1)
    return path


# --------------------------------------------------------------------------- kagglehub


def kagglehub_dataset_dir(cache: Path, handle: str) -> tuple[Path, Path]:
    """``(dataset folder, completion marker)`` of a versioned dataset handle in a kagglehub cache."""
    owner, dataset, versions, version = handle.split("/")
    assert versions == "versions"
    base = cache / "datasets" / owner / dataset
    return base / "versions" / version, base / f"{version}.complete"


def subprocess_env() -> dict[str, str]:
    """The (isolated) environment for child Python processes, with the repository importable."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# --------------------------------------------------------------------------- child processes
#
# Two tests need a fresh Python process (a build killed by SIGKILL, and ``python -m
# cxrlib``). Each child imports cxrlib, hence torch, which takes seconds; so the children
# are started when the session starts, run while the suite is collected and run, and the
# tests that read their results run last. A child whose test was not collected is killed
# at the end of the session; a test whose child was not started early starts it itself.

#: Run in a child process: scan a dataset, then build its PixelCache but die by SIGKILL
#: (no cleanup, no ``finally``) while decoding the third image.
KILLED_BUILD_SCRIPT = r"""
import os, signal, sys
import cxrlib.data as data

result = data.scan(sys.argv[1], progress=False)
calls = {"n": 0}
original = data.PixelCache._decode

def dying_decode(self, record):
    calls["n"] += 1
    if calls["n"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, record)

data.PixelCache._decode = dying_decode
data.PixelCache(result.root, result.records, int(sys.argv[2])).build(progress=False, workers=1)
print("the build was not interrupted")
"""

KILLED_BUILD_SIZE = 24

#: Test name -> (test file, the child it reads).
CHILD_TESTS = {
    "test_interrupted_build_is_never_taken_as_complete": ("test_data.py", "killed_build"),
    "test_python_dash_m_missing_folder": ("test_cli_data.py", "cli_missing"),
}


@dataclass
class Child:
    """A child process and what it works on."""

    proc: subprocess.Popen[str]
    base: Path  # its private folder
    cache: Path  # its CXR_CACHE_DIR
    dataset: SynthDataset | None = None

    def communicate(self, timeout: float = 180) -> tuple[str, str]:
        return self.proc.communicate(timeout=timeout)


_children: dict[str, Child] = {}
_child_dirs: list[Path] = []


def _child_env(base: Path) -> dict[str, str]:
    env = subprocess_env()
    for var in ("CXR_DATA_DIR", "CXR_FAST", "CXR_KAGGLE_HANDLE", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        env.pop(var, None)
    env["CXR_CACHE_DIR"] = str(base / "cache")
    env["KAGGLEHUB_CACHE"] = str(base / "kagglehub")
    return env


def _start_child(name: str) -> Child:
    if name in _children:
        return _children[name]
    base = Path(tempfile.mkdtemp(prefix=f"cxr-test-{name}-"))
    _child_dirs.append(base)
    popen = {"env": _child_env(base), "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    if name == "killed_build":
        ds = build_dataset(base / "data", dict.fromkeys(CANONICAL, 10), masks=True)
        cmd = [sys.executable, "-c", KILLED_BUILD_SCRIPT, str(ds.path), str(KILLED_BUILD_SIZE)]
        child = Child(subprocess.Popen(cmd, **popen), base, base / "cache", ds)  # type: ignore[call-overload]
    elif name == "cli_missing":
        cmd = [sys.executable, "-m", "cxrlib", "data", str(base / "missing")]
        child = Child(subprocess.Popen(cmd, **popen), base, base / "cache")  # type: ignore[call-overload]
    else:
        raise KeyError(name)
    _children[name] = child
    return child


def _test_name(item: pytest.Item) -> str:
    return getattr(item, "originalname", None) or item.name


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start the children of the test files this run names (before collection imports torch)."""
    if getattr(session.config.option, "numprocesses", None) and not hasattr(session.config, "workerinput"):
        return  # an xdist controller runs no tests; its workers start what they need
    here = Path(__file__).resolve().parent
    named = [Path(str(arg).split("::")[0]).resolve() for arg in session.config.args] or [Path.cwd()]
    for file_name, child in CHILD_TESTS.values():
        test_file = here / file_name
        if any(p == test_file or p in test_file.parents for p in named):
            _start_child(child)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that read a child's results last, so the child had time to finish."""
    items.sort(key=lambda item: _test_name(item) in CHILD_TESTS)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for child in _children.values():  # a child whose test did not run is still running
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.communicate()
    _children.clear()
    for base in _child_dirs:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def children() -> Callable[[str], Child]:
    """``children(name)``: the child process ``name`` (started now if it was not yet)."""
    return _start_child
