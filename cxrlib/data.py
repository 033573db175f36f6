"""The COVID-19 Radiography Database: finding it, scanning it, splitting it, caching it.

COVID-19 Radiography Database
-----------------------------
Chest X-rays (PA/AP) in four classes, 299 x 299 gray PNGs, with lung masks since 2022.

===================  ======  ====================================================
class                images  sources
===================  ======  ====================================================
COVID                 3,616  PadChest (2,473), a German medical school (183),
                             SIRM / GitHub / Kaggle / Twitter (559), GitHub (400)
Normal               10,192  RSNA Pneumonia Challenge (8,851), Kermany et al. (1,341)
Lung_Opacity          6,012  RSNA Pneumonia Challenge (non-COVID lung opacity)
Viral Pneumonia       1,345  Kermany et al. 2018 (children aged 1-5, Guangzhou)
===================  ======  ====================================================

Total 21,165 images. Source: https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database
(kagglehub handle :data:`cxrlib.config.KAGGLE_HANDLE`).

Citation: M.E.H. Chowdhury et al., "Can AI help in screening Viral and COVID-19
pneumonia?", IEEE Access 8, 132665-132676 (2020); T. Rahman et al., "Exploring the effect
of image enhancement techniques on COVID-19 detection using chest X-ray images",
Computers in Biology and Medicine 132, 104319 (2021).

License: the database is published on Kaggle for research and teaching; each source keeps
its own terms (RSNA challenge terms; Kermany et al. CC BY 4.0; SIRM and publication images
under their publishers' terms). Not for clinical use.

Layouts understood
------------------
* current: ``<root>/<Class>/images/*.png`` with optional ``<Class>/masks/*.png``
  (metadata spreadsheets and other non-image files are ignored);
* older flat releases: ``<root>/<Class>/*.png`` with folder names such as ``COVID-19``,
  ``COVID``, ``NORMAL``, ``Normal``, ``Viral Pneumonia``, ``Lung_Opacity``;
* either one with or without an enclosing ``COVID-19_Radiography_Dataset`` folder, and
  with any subset of the classes.

Pipeline
--------
:func:`scan` decodes every file once (bad files are skipped and reported), computes a
perceptual hash and a small thumbnail per image, and remembers them in a scan index
under ``CXR_CACHE_DIR`` keyed by size and modification time. :func:`make_split` groups
near-duplicates and splits whole groups, stratified and seeded. :class:`PixelCache`
stores each image decoded and resized once, as a ``uint8`` memmap. :class:`CXRData` ties
these together and hands out :class:`CXRDataset` objects for PyTorch.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from tqdm.auto import tqdm

from .config import CLASS_NAMES, CXRError, Settings, cache_dir, get_settings, resolve_data_dir
from .imaging import UnreadableImageError, decode, is_image_file, read_gray, resize_gray
from .regions import REGIONS, apply_region, lung_region, read_mask

SPLITS: tuple[str, ...] = ("train", "valid", "test")

#: The whole COVID-19 Radiography Database (Kaggle, version 5), per class.
DATABASE_COUNTS: dict[str, int] = {"COVID": 3616, "Lung_Opacity": 6012, "Normal": 10192, "Viral Pneumonia": 1345}

#: Bumped whenever the canonical pixels or the scan's hashes would change.
PIPELINE_VERSION = 1

#: Two images are near-duplicates when their 64-bit perceptual hashes differ in at most
#: this many bits *and* their 32x32 thumbnails correlate at least :data:`NEAR_DUP_MIN_CORR`.
#: pHash alone is too coarse for chest X-rays (they all look alike at 8x8 DCT): on the
#: 2,548-image sample, 251 pairs are within 6 bits and 45 of them cross classes, while the
#: thumbnail test keeps 25 pairs, none across classes.
NEAR_DUP_MAX_BITS = 10
NEAR_DUP_MIN_CORR = 0.97
THUMB_SIZE = 32


_CLASS_ALIASES = {
    "covid": "COVID",
    "covid19": "COVID",
    "normal": "Normal",
    "viralpneumonia": "Viral Pneumonia",
    "lungopacity": "Lung_Opacity",
}


def normalize_class_name(name: str) -> str | None:
    """Map a folder name such as ``COVID-19``, ``NORMAL`` or ``Viral_Pneumonia`` to the
    canonical class name, or ``None`` when it is not a class folder."""
    return _CLASS_ALIASES.get(re.sub(r"[^a-z0-9]", "", name.lower()))


def _class_dirs(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return found
    for child in children:
        label = normalize_class_name(child.name)
        if label and label not in found:
            found[label] = child
    return found


def find_dataset_root(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Path]]:
    """The folder that holds the class folders, looking up to two levels down.

    Returns ``(root, {class_name: class_folder})``.

    Raises:
        CXRError: the folder does not exist or holds no class folders.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CXRError(f"data folder not found: {path}")
    best: tuple[Path, dict[str, Path]] | None = None
    level = [path]
    for _depth in range(3):
        for folder in level:
            found = _class_dirs(folder)
            if found and (best is None or len(found) > len(best[1])):
                best = (folder, found)
        if best:
            return best[0].resolve(), best[1]
        level = [c for f in level for c in sorted(f.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    raise CXRError(
        f"no class folders (COVID, Normal, Lung_Opacity, Viral Pneumonia) found in {path} or the two levels below it"
    )


@dataclass(frozen=True)
class ImageRecord:
    """One decodable image: path relative to the dataset root (POSIX), class, optional mask."""

    path: str
    label: str
    mask: str | None
    width: int
    height: int
    mode: str
    format: str
    file_size: int
    mtime_ns: int


@dataclass(frozen=True)
class SkippedFile:
    """A file with an image extension that could not be decoded, and why."""

    path: str
    reason: str


@dataclass
class ScanResult:
    """Everything :func:`scan` learnt about a dataset folder."""

    root: Path
    records: list[ImageRecord]
    skipped: list[SkippedFile]
    phashes: np.ndarray  # uint64, one per record
    thumbs: np.ndarray  # uint8 (n, THUMB_SIZE, THUMB_SIZE)

    @property
    def classes(self) -> list[str]:
        """Classes present, in the canonical order of :data:`CLASS_NAMES`."""
        present = {r.label for r in self.records}
        return [c for c in CLASS_NAMES if c in present]

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(r.label for r in self.records)
        return {c: counts[c] for c in self.classes}

    @property
    def has_masks(self) -> bool:
        return bool(self.records) and all(r.mask is not None for r in self.records)

    def describe_size(self) -> str:
        """This folder against the whole database: "the whole database", or the share of
        it that this folder (a sample) holds."""
        whole = sum(DATABASE_COUNTS.values())
        n = len(self.records)
        if n >= whole:
            return "the whole database"
        share = f"{n / whole:.0%}" if n >= whole / 100 else "less than 1%"
        return f"a sample of {share} of the database's {whole:,}"

    def describe_images(self) -> str:
        """How many readable images, and what share of the database that is: "2,548 images,
        a sample of 12% of the database's 21,165" (for the build note of every page)."""
        return f"{len(self.records):,} images, {self.describe_size()}"

    def describe_balance(self) -> str:
        """This folder's largest and smallest class against the whole database's published
        counts (:data:`DATABASE_COUNTS`): how unbalanced each is."""

        def extremes(counts: dict[str, int]) -> str:
            largest, smallest = max(counts, key=counts.__getitem__), min(counts, key=counts.__getitem__)
            ratio = counts[largest] / max(counts[smallest], 1)
            return f"{largest} {counts[largest]:,} and {smallest} {counts[smallest]:,} images, {ratio:.1f} to 1"

        folder = self.counts
        if not folder:
            return "this folder holds no readable image"
        if len(folder) == 1:
            name, count = next(iter(folder.items()))
            return f"this folder holds one class only: {name} {count:,} images"
        database = {name: DATABASE_COUNTS[name] for name in folder}
        same = "" if len(folder) == len(DATABASE_COUNTS) else " (the same classes)"
        return (
            f"largest and smallest class: this folder {extremes(folder)}; the whole database{same} {extremes(database)}"
        )

    def summary(self) -> str:
        """One line for the book's introduction: folder name, readable images, per class, and
        the share of the database it holds (:meth:`describe_size`)."""
        counts = ", ".join(f"{name} {count:,}" for name, count in self.counts.items())
        return f"the folder {self.root.name}, {len(self.records):,} readable images ({counts}), {self.describe_size()}."

    def select(self, indices: Sequence[int]) -> ScanResult:
        """A scan restricted to some records (same root and skipped list)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ScanResult(self.root, [self.records[i] for i in idx], self.skipped, self.phashes[idx], self.thumbs[idx])


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class _Probe:
    ok: bool
    reason: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    phash: int = 0
    thumb: np.ndarray | None = None


def _probe(path: Path) -> _Probe:
    """Decode one file fully (truncation only shows when decoding), hash and thumbnail it."""
    try:
        pixels, (width, height, mode, fmt) = decode(path)
    except UnreadableImageError as err:
        return _Probe(ok=False, reason=str(err))
    small = Image.fromarray(pixels)
    if max(small.size) > 1024:  # hashing needs no more; keeps huge films cheap
        small.thumbnail((1024, 1024), Image.BILINEAR)
    phash = int(str(imagehash.phash(small)), 16)
    thumb = np.asarray(small.resize((THUMB_SIZE, THUMB_SIZE), Image.BILINEAR), dtype=np.uint8)
    return _Probe(True, "", width, height, mode, fmt, phash, thumb)


def _index_path(root: Path) -> Path:
    key = hashlib.sha256(str(root).encode()).hexdigest()[:20]
    return cache_dir() / "scan" / f"{key}-v{PIPELINE_VERSION}.npz"


def _load_index(path: Path) -> dict[str, tuple[Any, ...]]:
    """Previous probe results by relative path, or empty when absent, damaged or stale."""
    try:
        with np.load(path, allow_pickle=False) as z:
            cols = {k: z[k] for k in ("path", *_INDEX_COLUMNS)}
        return {rel: tuple(cols[k][i] for k in _INDEX_COLUMNS) for i, rel in enumerate(cols["path"].tolist())}
    except Exception:  # missing, truncated, another format: the index is only a speed-up
        return {}


_INDEX_COLUMNS = ("file_size", "mtime_ns", "ok", "reason", "width", "height", "mode", "format", "phash", "thumb")


def _atomic_write_bytes(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers see the old
    file or the complete new one, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_index(path: Path, entries: dict[str, tuple[Any, ...]]) -> None:
    rels = sorted(entries)
    cols: dict[str, Any] = {"path": np.array(rels, dtype=str)}
    for k, name in enumerate(_INDEX_COLUMNS):
        values = [entries[r][k] for r in rels]
        if name == "thumb":
            cols[name] = np.stack(values) if values else np.zeros((0, THUMB_SIZE, THUMB_SIZE), np.uint8)
        elif name == "phash":
            cols[name] = np.array(values, dtype=np.uint64)
        elif name in ("reason", "mode", "format"):
            cols[name] = np.array(values, dtype=str)
        else:
            cols[name] = np.array(values, dtype=np.int64)
    try:
        _atomic_write_bytes(path, lambda fh: np.savez(fh, **cols))
    except OSError:
        pass  # a read-only cache only costs speed


def _list_candidates(root: Path, class_dirs: dict[str, Path]) -> list[tuple[str, str, str | None]]:
    """``(relative path, class, relative mask path)`` for every image-named file."""
    out = []
    for label, folder in class_dirs.items():
        image_dir = folder / "images" if (folder / "images").is_dir() else folder
        mask_dir = folder / "masks" if (folder / "masks").is_dir() else None
        for entry in sorted(os.scandir(image_dir), key=lambda e: e.name):
            if not entry.is_file() or not is_image_file(entry.name) or entry.name.startswith("."):
                continue
            rel = Path(entry.path).relative_to(root).as_posix()
            mask = None
            if mask_dir is not None and (mask_dir / entry.name).is_file():
                mask = (mask_dir / entry.name).relative_to(root).as_posix()
            out.append((rel, label, mask))
    out.sort()
    return out


def scan(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    workers: int | None = None,
    use_index: bool = True,
) -> ScanResult:
    """Find, decode and fingerprint every image of a dataset folder.

    Bad files never stop a scan: a file with an image extension that cannot be decoded is
    listed in ``skipped`` with its reason; files without an image extension are ignored.
    Results are cached per file (size and modification time), so a second scan of an
    unchanged folder decodes nothing.
    """
    root, class_dirs = find_dataset_root(resolve_data_dir(data_dir))
    candidates = _list_candidates(root, class_dirs)
    index_file = _index_path(root)
    index = _load_index(index_file) if use_index else {}
    stats = {}
    todo = []
    for rel, _label, _mask in candidates:
        st = (root / rel).stat()
        stats[rel] = (st.st_size, st.st_mtime_ns)
        old = index.get(rel)
        if old is None or (int(old[0]), int(old[1])) != stats[rel]:
            todo.append(rel)
    if todo:
        workers = workers or min(4, (os.cpu_count() or 1) * 2)
        with ThreadPoolExecutor(workers) as pool:
            probes = pool.map(_probe, (root / rel for rel in todo))
            for rel, probe in tqdm(
                zip(todo, probes), total=len(todo), desc="scanning images", unit="img", disable=not progress
            ):
                thumb = probe.thumb if probe.thumb is not None else np.zeros((THUMB_SIZE, THUMB_SIZE), np.uint8)
                index[rel] = (
                    *stats[rel],
                    probe.ok,
                    probe.reason,
                    probe.width,
                    probe.height,
                    probe.mode,
                    probe.format,
                    probe.phash,
                    thumb,
                )
        current = {rel for rel, _, _ in candidates}
        _save_index(index_file, {r: v for r, v in index.items() if r in current})

    records, skipped, hashes, thumbs = [], [], [], []
    for rel, label, mask in candidates:
        size, mtime, ok, reason, width, height, mode, fmt, phash, thumb = index[rel]
        if not bool(ok):
            skipped.append(SkippedFile(rel, str(reason)))
            continue
        records.append(
            ImageRecord(rel, label, mask, int(width), int(height), str(mode), str(fmt), int(size), int(mtime))
        )
        hashes.append(int(phash))
        thumbs.append(thumb)
    return ScanResult(
        root=root,
        records=records,
        skipped=skipped,
        phashes=np.array(hashes, dtype=np.uint64),
        thumbs=np.stack(thumbs) if thumbs else np.zeros((0, THUMB_SIZE, THUMB_SIZE), np.uint8),
    )


def data_fingerprint(data_dir: str | os.PathLike[str] | None = None) -> str:
    """A short hash naming a data folder's images wherever the folder lies: 16 hex digits of
    the sha256 of the sorted ``(path relative to the dataset root, class, size in bytes,
    mask path)`` of every image file, the same listing :func:`scan` starts from.

    It is the *data version* of a published run (:func:`cxrlib.published.run_key`): the
    book's runs are trained on a CI machine and reused on a reader's laptop or Colab, where
    the folder's absolute path differs (the check of a local run compares paths, which only
    holds on one machine). Why this listing and not something else:

    * it is cheap before anything is trained: one directory listing and one ``stat`` per file,
      no decoding (0.1-0.2 s for the 2,548-image sample, where a first scan decodes every
      image), so it can decide whether a download replaces training;
    * relative paths and classes are what the split and the fast subset are computed from
      (:func:`make_split`, :func:`fast_subset`), and byte sizes tell apart two releases or a
      re-encoded copy that kept the names; mask paths decide where the lung region of
      chapter 7's runs comes from;
    * it leaves out what differs between copies of the same files: the absolute path, the
      enclosing folder, modification times, and the scan cache.

    The hash of ``split.csv`` was the other candidate; it needs the full scan (every image
    decoded, minutes on a fresh machine) and depends on the split's seed and sizes, which
    the run's configuration already names.

    Raises:
        CXRError: no data folder, or no class folders in it.
    """
    root, class_dirs = find_dataset_root(resolve_data_dir(data_dir))
    listing = [
        [rel, label, (root / rel).stat().st_size, mask] for rel, label, mask in _list_candidates(root, class_dirs)
    ]
    canonical = json.dumps(sorted(listing), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- near-duplicates


def near_duplicate_groups(
    phashes: np.ndarray,
    thumbs: np.ndarray,
    *,
    max_bits: int = NEAR_DUP_MAX_BITS,
    min_corr: float = NEAR_DUP_MIN_CORR,
    chunk: int = 512,
) -> list[list[int]]:
    """Groups (index lists, each of size >= 2) of images that are near-duplicates.

    Candidate pairs come from the Hamming distance of perceptual hashes, and are confirmed
    by the Pearson correlation of standardized 32x32 thumbnails. Groups are the connected
    components of confirmed pairs, so A~B and B~C put A, B, C together.
    """
    n = len(phashes)
    if n < 2:
        return []
    flat = thumbs.reshape(n, -1).astype(np.float32)
    flat -= flat.mean(axis=1, keepdims=True)
    flat /= flat.std(axis=1, keepdims=True) + 1e-6
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        dist = np.bitwise_count(phashes[rows, None] ^ phashes[None, :])
        ii, jj = np.nonzero(dist <= max_bits)
        keep = jj > rows[ii]
        ii, jj = rows[ii[keep]], jj[keep]
        if len(ii) == 0:
            continue
        corr = np.einsum("ij,ij->i", flat[ii], flat[jj]) / flat.shape[1]
        for a, b in zip(ii[corr >= min_corr], jj[corr >= min_corr]):
            ra, rb = find(int(a)), find(int(b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


# --------------------------------------------------------------------------- splitting


@dataclass
class SplitResult:
    """A split assignment per record, plus what the splitter had to say."""

    assignment: list[str]
    groups: list[list[int]]
    notes: list[str] = field(default_factory=list)
    per_class: dict[str, int] = field(default_factory=dict)  # valid/test images per class

    def counts(self) -> dict[str, int]:
        c = Counter(self.assignment)
        return {s: c[s] for s in SPLITS}


def _quota(counts: dict[str, int], valid_size: int, test_size: int) -> tuple[int, int, list[str]]:
    k = len(counts)
    valid_q, test_q = valid_size // k, test_size // k
    notes = []
    smallest = min(counts, key=lambda c: (counts[c], c))
    n_min = counts[smallest]
    if n_min < 3:
        raise CXRError(f"class {smallest!r} has only {n_min} image(s); at least 3 are needed to split")
    limit = n_min // 2  # keep at least half of the smallest class for training
    if valid_q + test_q > limit:
        scale = limit / (valid_q + test_q)
        new_valid, new_test = max(1, int(valid_q * scale)), max(1, int(test_q * scale))
        notes.append(
            f"class {smallest!r} has only {n_min} images, too few for {valid_q} validation and "
            f"{test_q} test images per class: using {new_valid} and {new_test} per class instead"
        )
        valid_q, test_q = new_valid, new_test
    if min(valid_q, test_q) == 0:
        notes.append(
            f"{valid_size} validation / {test_size} test images cannot be shared equally by {k} classes: "
            f"{valid_q} and {test_q} per class"
        )
    return valid_q, test_q, notes


def make_split(
    records: Sequence[ImageRecord],
    groups: Sequence[Sequence[int]] = (),
    *,
    valid_size: int = 400,
    test_size: int = 400,
    seed: int = 0,
) -> SplitResult:
    """Stratified, seeded split with equal per-class counts in validation and test.

    ``valid_size`` and ``test_size`` are totals, divided equally among the classes present
    (400 and 4 classes: 100 per class). Near-duplicate groups move as one unit, so no
    image has a twin in another split. The result depends only on the relative paths,
    classes, groups and seed: not on scan order or where the folder lives.
    """
    if not records:
        raise CXRError("no images to split")
    counts = Counter(r.label for r in records)
    valid_q, test_q, notes = _quota(dict(counts), valid_size, test_size)
    grouped = {i for g in groups for i in g}
    units = [sorted(g, key=lambda i: records[i].path) for g in groups]
    units += [[i] for i in range(len(records)) if i not in grouped]
    units.sort(key=lambda u: records[u[0]].path)
    order = np.random.default_rng(seed).permutation(len(units))
    remaining = {"test": dict.fromkeys(counts, test_q), "valid": dict.fromkeys(counts, valid_q)}
    assignment = ["train"] * len(records)
    for u in order:
        unit = units[u]
        need = Counter(records[i].label for i in unit)
        for split in ("test", "valid"):
            if all(remaining[split][c] >= k for c, k in need.items()):
                for c, k in need.items():
                    remaining[split][c] -= k
                for i in unit:
                    assignment[i] = split
                break
    short = {f"{s}/{c}": left for s, by in remaining.items() for c, left in by.items() if left}
    if short:
        notes.append(f"could not fill every split equally (missing images: {short})")
    return SplitResult(assignment, [list(g) for g in groups], notes, {"valid": valid_q, "test": test_q})


def write_split_csv(path: str | os.PathLike[str], records: Sequence[ImageRecord], assignment: Sequence[str]) -> None:
    """Write ``path,class,split`` rows sorted by path, UTF-8, ``\\n`` line ends: the same
    files always give a byte-identical file."""
    rows = sorted(zip((r.path for r in records), (r.label for r in records), assignment))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "class", "split"])
    writer.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    try:
        _atomic_write_bytes(Path(path), lambda fh: fh.write(data))
    except OSError as err:
        raise CXRError(f"cannot write split file {path}: {err.strerror or err}") from None


def read_split_csv(path: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """``{relative path: (class, split)}`` from a split file."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"path", "class", "split"} <= set(reader.fieldnames):
                raise CXRError(f"{path}: not a split file (expected columns path,class,split)")
            out = {}
            for row in reader:
                if row["split"] not in SPLITS:
                    raise CXRError(f"{path}: unknown split {row['split']!r} for {row['path']}")
                out[row["path"]] = (row["class"], row["split"])
            return out
    except OSError as err:
        raise CXRError(f"cannot read split file {path}: {err.strerror or err}") from None


def fast_subset(records: Sequence[ImageRecord], per_class: int, seed: int = 0) -> list[int]:
    """Indices of a stratified subset: ``per_class`` images of each class, chosen by a
    seeded hash of the relative path (stable when other files are added)."""

    def key(i: int) -> str:
        return hashlib.sha256(f"{seed}:{records[i].path}".encode()).hexdigest()

    chosen: list[int] = []
    for label in CLASS_NAMES:
        members = sorted((i for i, r in enumerate(records) if r.label == label), key=key)
        chosen += members[:per_class]
    return sorted(chosen)


# --------------------------------------------------------------------------- pixel cache


class PixelCache:
    """Decoded, resized images as one ``uint8`` memmap of shape ``(n, size, size)``.

    The key is a hash of the relative paths, file sizes and modification times, the size,
    and :data:`PIPELINE_VERSION`: a changed, added or removed file gives a new key. The
    data file is written under a temporary name and renamed; the small JSON beside it is
    written last, so a cache whose writer was killed is never taken for a complete one.
    """

    def __init__(self, root: Path, records: Sequence[ImageRecord], size: int, *, kind: str = "images") -> None:
        if kind not in ("images", "masks"):
            raise ValueError(f"kind must be 'images' or 'masks', not {kind!r}")
        self.root = Path(root)
        self.records = list(records)
        self.size = int(size)
        self.kind = kind
        files = [(r.path if kind == "images" else r.mask, r.file_size, r.mtime_ns) for r in self.records]
        if kind == "masks":
            files = [
                (p, (self.root / p).stat().st_size if p else 0, (self.root / p).stat().st_mtime_ns if p else 0)
                for p, _, _ in files
            ]
        digest = hashlib.sha256(json.dumps([PIPELINE_VERSION, kind, self.size, files]).encode()).hexdigest()
        self.key = digest[:24]
        folder = cache_dir() / "pixels"
        self.data_path = folder / f"{self.key}-{self.size}px-{kind}.u8"
        self.meta_path = self.data_path.with_suffix(".json")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.records), self.size, self.size)

    def is_complete(self) -> bool:
        try:
            meta = json.loads(self.meta_path.read_text())
            expected = int(np.prod(self.shape))
            return meta.get("shape") == list(self.shape) and self.data_path.stat().st_size == expected
        except (OSError, ValueError):
            return False

    def load(self, *, progress: bool = True, workers: int | None = None) -> np.ndarray:
        """The cached array (read-only memmap), building it first when needed."""
        if not self.records:
            return np.zeros(self.shape, np.uint8)
        if not self.is_complete():
            self.build(progress=progress, workers=workers)
        return np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=self.shape)

    def _decode(self, record: ImageRecord) -> np.ndarray:
        if self.kind == "images":
            return resize_gray(read_gray(self.root / record.path), self.size)
        assert record.mask is not None
        return read_mask(self.root / record.mask, self.size)

    def build(self, *, progress: bool = True, workers: int | None = None) -> None:
        """Decode every image into a new cache file (atomically)."""
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_partials()
        tmp = self.data_path.with_name(f"{self.data_path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=self.shape)
            workers = workers or min(4, (os.cpu_count() or 1) * 2)
            with ThreadPoolExecutor(workers) as pool:
                decoded = pool.map(self._decode, self.records)
                for i, pixels in enumerate(
                    tqdm(
                        decoded,
                        total=len(self.records),
                        desc=f"caching {self.kind} at {self.size}px",
                        unit="img",
                        disable=not progress,
                    )
                ):
                    array[i] = pixels
            array.flush()
            del array
            os.replace(tmp, self.data_path)
        except UnreadableImageError as err:
            raise CXRError(f"an image changed since it was scanned ({err}); scan again") from None
        finally:
            if tmp.exists():
                tmp.unlink()
        meta = {"shape": list(self.shape), "kind": self.kind, "root": str(self.root), "version": PIPELINE_VERSION}
        _atomic_write_bytes(self.meta_path, lambda fh: fh.write(json.dumps(meta).encode()))

    def _remove_stale_partials(self) -> None:
        """Delete partial files of this key left by processes that no longer run."""
        for partial in self.data_path.parent.glob(f"{self.data_path.name}.partial-*"):
            try:
                pid = int(partial.name.rsplit(".partial-", 1)[1].split("-")[0])
                os.kill(pid, 0)
            except ProcessLookupError:
                partial.unlink(missing_ok=True)
            except (ValueError, PermissionError, OSError):
                continue


# --------------------------------------------------------------------------- torch dataset


class CXRDataset(Dataset):
    """A PyTorch dataset over cached pixels.

    Items are ``(image, label)``, or ``(image, label, mask)`` when masks are given. Before
    the transform, ``image`` is a :class:`torchvision.tv_tensors.Image` of shape
    ``(1, size, size)`` and dtype ``uint8``; the mask is a ``tv_tensors.Mask`` of the same
    shape (0 or 255), so geometric transforms move image and mask together.

    ``region`` (``hide-lungs`` or ``lungs-only``, see :func:`cxrlib.regions.apply_region`)
    blacks out part of each image before the transform; ``lung_regions`` is then a boolean
    array, one ``(size, size)`` region per pixel row (indexed like ``pixels``) or one
    region for all images.
    """

    def __init__(
        self,
        pixels: np.ndarray,
        labels: Sequence[int],
        indices: Sequence[int] | None = None,
        *,
        transform: Callable[..., Any] | None = None,
        masks: np.ndarray | None = None,
        classes: Sequence[str] = CLASS_NAMES,
        paths: Sequence[str] | None = None,
        region: str = "full",
        lung_regions: np.ndarray | None = None,
    ) -> None:
        if region not in REGIONS:
            raise CXRError(f"unknown region {region!r}; choose from {', '.join(REGIONS)}")
        if region != "full" and lung_regions is None:
            raise CXRError(f"region {region!r} needs lung regions")
        self.region = region
        self.lung_regions = None
        if lung_regions is not None:  # one region for all images: a read-only view, no copies
            regions = np.asarray(lung_regions, dtype=bool)
            self.lung_regions = np.broadcast_to(regions, (len(pixels), *regions.shape[-2:]))
        self.pixels = pixels
        self.labels = np.asarray(labels, dtype=np.int64)
        self.indices = np.arange(len(pixels)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.masks = masks
        self.classes = list(classes)
        self.paths = list(paths) if paths is not None else None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> np.ndarray:
        """Labels of the items, in item order."""
        return self.labels[self.indices]

    def __getitem__(self, item: int) -> tuple[Any, ...]:
        i = int(self.indices[item])
        pixels = np.array(self.pixels[i])  # a copy: the cache is read-only
        if self.lung_regions is not None:
            pixels = apply_region(pixels, self.lung_regions[i], self.region)
        image = tv_tensors.Image(torch.from_numpy(pixels)[None])
        label = int(self.labels[i])
        if self.masks is None:
            if self.transform is not None:
                image = self.transform(image)
            return image, label
        mask = tv_tensors.Mask(torch.from_numpy(np.array(self.masks[i]))[None])
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, label, mask


# --------------------------------------------------------------------------- facade


@dataclass
class CXRData:
    """A scanned dataset with its split: the one object chapters and the CLI work with.

    >>> data = CXRData.load()                      # CXR_DATA_DIR, or kagglehub
    >>> train = data.dataset("train", transform=...)
    """

    scan: ScanResult
    split: SplitResult
    settings: Settings

    @classmethod
    def load(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        fast: bool | None = None,
        seed: int | None = None,
        valid_size: int | None = None,
        test_size: int | None = None,
        split_file: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> CXRData:
        """Scan ``data_dir`` (see :func:`cxrlib.config.resolve_data_dir`) and split it.

        In fast mode (``CXR_FAST=1`` or ``fast=True``) only a stratified subset is kept.
        ``split_file`` reuses a saved split (written when it does not exist yet).
        """
        settings = get_settings(fast)
        if seed is not None:
            settings = Settings(**{**settings.__dict__, "seed": seed})
        result = scan(data_dir, progress=progress)
        if not result.records:
            raise CXRError(f"no readable images in {result.root}")
        if settings.per_class_limit:
            # the subset does not depend on the split seed, so a saved split stays valid
            result = result.select(fast_subset(result.records, settings.per_class_limit))
        groups = near_duplicate_groups(result.phashes, result.thumbs)
        if split_file is not None and Path(split_file).exists():
            split = _split_from_file(result, groups, Path(split_file))
        else:
            split = make_split(
                result.records,
                groups,
                valid_size=settings.valid_size if valid_size is None else valid_size,
                test_size=settings.test_size if test_size is None else test_size,
                seed=settings.seed,
            )
            if split_file is not None:
                write_split_csv(split_file, result.records, split.assignment)
        return cls(result, split, settings)

    # -- descriptions
    @property
    def root(self) -> Path:
        return self.scan.root

    @property
    def classes(self) -> list[str]:
        return self.scan.classes

    @property
    def records(self) -> list[ImageRecord]:
        return self.scan.records

    @property
    def has_masks(self) -> bool:
        return self.scan.has_masks

    def labels(self) -> np.ndarray:
        """Label index (into :attr:`classes`) of every record."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.array([lookup[r.label] for r in self.records], dtype=np.int64)

    def indices(self, split: str) -> np.ndarray:
        if split not in (*SPLITS, "all"):
            raise CXRError(f"unknown split {split!r}; choose from train, valid, test, all")
        if split == "all":
            return np.arange(len(self.records))
        return np.array([i for i, s in enumerate(self.split.assignment) if s == split], dtype=np.int64)

    def frame(self) -> Any:
        """A pandas DataFrame with one row per image: path, class, split, size, mode."""
        return pd.DataFrame(
            {
                "path": [r.path for r in self.records],
                "class": [r.label for r in self.records],
                "split": self.split.assignment,
                "width": [r.width for r in self.records],
                "height": [r.height for r in self.records],
                "mode": [r.mode for r in self.records],
                "format": [r.format for r in self.records],
            }
        )

    def duplicate_groups(self) -> list[list[dict[str, str]]]:
        """Near-duplicate groups as ``[{path, class, split}, ...]`` lists."""
        return [
            [
                {"path": self.records[i].path, "class": self.records[i].label, "split": self.split.assignment[i]}
                for i in g
            ]
            for g in self.split.groups
        ]

    def write_split(self, path: str | os.PathLike[str]) -> None:
        write_split_csv(path, self.records, self.split.assignment)

    # -- pixels
    def pixels(
        self, size: int | None = None, *, indices: Sequence[int] | None = None, progress: bool = True
    ) -> np.ndarray:
        """All images at ``size`` px (default: the mode's size), from the cache; with
        ``indices``, only those images, in that order (a cache of their own)."""
        return PixelCache(self.root, self._subset(indices), size or self.settings.img_size).load(progress=progress)

    def masks(
        self, size: int | None = None, *, indices: Sequence[int] | None = None, progress: bool = True
    ) -> np.ndarray | None:
        """Lung masks at ``size`` px (with ``indices``: of those images), or ``None`` when the
        data has none."""
        if not self.has_masks:
            return None
        records = self._subset(indices)
        return PixelCache(self.root, records, size or self.settings.img_size, kind="masks").load(progress=progress)

    def _subset(self, indices: Sequence[int] | None) -> list[ImageRecord]:
        return list(self.records) if indices is None else [self.records[int(i)] for i in indices]

    @property
    def region_source(self) -> str:
        """Where :meth:`lung_regions` come from: ``masks`` or ``chest box``."""
        return "masks" if self.has_masks else "chest box"

    def lung_regions(
        self,
        size: int | None = None,
        *,
        source: str | None = None,
        indices: Sequence[int] | None = None,
        progress: bool = True,
    ) -> np.ndarray:
        """Boolean lung regions at ``size`` px, ``(n, size, size)`` (with ``indices``: of those
        images): the data's masks, or :func:`central_chest_box` (a read-only view repeating
        one box) when the data has no masks or ``source="chest box"`` asks for the box."""
        size = size or self.settings.img_size
        source = source or self.region_source
        if source not in ("masks", "chest box"):
            raise CXRError(f"unknown lung region source {source!r}; choose masks or chest box")
        masks = self.masks(size, indices=indices, progress=progress) if source == "masks" else None
        if source == "masks" and masks is None:
            raise CXRError(f"{self.root} has no lung masks")
        return lung_region(masks, len(self.records) if indices is None else len(indices), size)

    def dataset(
        self,
        split: str,
        *,
        size: int | None = None,
        transform: Callable[..., Any] | None = None,
        with_masks: bool | None = None,
        region: str = "full",
        progress: bool = True,
    ) -> CXRDataset:
        """A :class:`CXRDataset` over one split (``train``, ``valid``, ``test`` or ``all``).

        Masks are included when the data has them (``with_masks=None``) or on request.
        ``region`` blacks out the lungs (``hide-lungs``) or all but the lungs
        (``lungs-only``), with :meth:`lung_regions`.
        """
        want_masks = self.has_masks if with_masks is None else with_masks
        if want_masks and not self.has_masks:
            raise CXRError("this dataset has no lung masks")
        regions = self.lung_regions(size, progress=progress) if region != "full" else None
        return CXRDataset(
            self.pixels(size, progress=progress),
            self.labels(),
            self.indices(split),
            transform=transform,
            masks=self.masks(size, progress=progress) if want_masks else None,
            classes=self.classes,
            paths=[r.path for r in self.records],
            region=region,
            lung_regions=regions,
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (what ``cxr data --json`` prints)."""
        scan_ = self.scan
        return {
            "root": str(scan_.root),
            "classes": scan_.classes,
            "counts": scan_.counts,
            "total": len(scan_.records),
            "skipped": [{"path": s.path, "reason": s.reason} for s in scan_.skipped],
            "split": self.split.counts(),
            "split_per_class": {
                s: dict(Counter(r.label for r, a in zip(self.records, self.split.assignment) if a == s)) for s in SPLITS
            },
            "split_notes": self.split.notes,
            "near_duplicate_groups": self.duplicate_groups(),
            "masks": scan_.has_masks,
            "modes": dict(Counter(r.mode for r in scan_.records)),
            "sizes": dict(Counter(f"{r.width}x{r.height}" for r in scan_.records).most_common(10)),
            "fast": self.settings.fast,
            "seed": self.settings.seed,
        }


def _split_from_file(result: ScanResult, groups: list[list[int]], path: Path) -> SplitResult:
    saved = read_split_csv(path)
    missing = [r.path for r in result.records if r.path not in saved]
    if missing:
        raise CXRError(
            f"split file {path} does not list {len(missing)} of the images (e.g. {missing[0]}); "
            "delete it to make a new split, or pass another file"
        )
    notes = []
    extra = len(set(saved) - {r.path for r in result.records})
    if extra:
        notes.append(f"{extra} files listed in {path.name} are no longer in the data and were ignored")
    assignment = [saved[r.path][1] for r in result.records]
    return SplitResult(assignment, groups, notes)
