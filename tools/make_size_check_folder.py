"""Build a database-sized folder from a small one, for timing only (the size check).

The whole COVID-19 Radiography Database has 21,165 images: COVID 3,616, Lung_Opacity
6,012, Normal 10,192 and Viral Pneumonia 1,345. This script fills a folder in the Kaggle
layout (``<Class>/images/<name>.png``) with exactly those counts, made from the images of
a smaller folder (such as the 2,548-image sample), so that ``cxr data``, ``cxr train`` and
``cxr evaluate`` can be timed at the real size on a machine that cannot download it.

Copy ``k`` of a source image ``NAME.png`` is ``NAME--kK.png``:

* ``k = 0`` is a hard link to the source file (a symbolic link where hard links fail);
* ``k >= 1`` is the source changed a little, so that copies are not all near-duplicates
  of each other (which would make the splitter move them as one huge group): mirrored
  left-right when ``k`` is odd, rotated by ``(1 + k // 2)`` degrees (alternating sign)
  and shifted down by ``k % 5`` pixels, then saved as an 8-bit gray PNG of the source size.

The result is for timing, **not** for measuring accuracy: copies of one image are still
similar, and mirrored films are not real anatomy.

Usage::

    python tools/make_size_check_folder.py SOURCE_DIR OUT_DIR [--scale 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

from cxrlib.data import DATABASE_COUNTS


def changed_copy(source: Path, target: Path, k: int) -> None:
    """Write copy ``k`` of ``source`` to ``target`` (see the module docstring)."""
    if k == 0:
        try:
            os.link(source, target)
        except OSError:
            target.symlink_to(source.resolve())
        return
    with Image.open(source) as img:
        gray = img.convert("L")
    if k % 2:
        gray = ImageOps.mirror(gray)
    angle = (1 + k // 2) * (1 if (k // 2) % 2 == 0 else -1)
    gray = gray.rotate(angle, resample=Image.BILINEAR, translate=(0, k % 5), fillcolor=0)
    gray.save(target, optimize=False, compress_level=1)


def _work(job: tuple[str, str, int]) -> None:
    changed_copy(Path(job[0]), Path(job[1]), job[2])


def build(source_dir: Path, out_dir: Path, scale: float = 1.0, workers: int | None = None) -> dict[str, int]:
    """Fill ``out_dir`` and return the count per class."""
    from cxrlib.data import find_dataset_root

    root, class_dirs = find_dataset_root(source_dir)
    jobs: list[tuple[str, str, int]] = []
    counts: dict[str, int] = {}
    for label, wanted in DATABASE_COUNTS.items():
        if label not in class_dirs:
            raise SystemExit(f"{source_dir} has no {label} folder")
        folder = class_dirs[label]
        folder = folder / "images" if (folder / "images").is_dir() else folder
        sources = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        target_dir = out_dir / label / "images"
        target_dir.mkdir(parents=True, exist_ok=True)
        n = max(1, round(wanted * scale))
        for i in range(n):
            src = sources[i % len(sources)]
            k = i // len(sources)
            jobs.append((str(src), str(target_dir / f"{src.stem}--k{k}.png"), k))
        counts[label] = n
    todo = [j for j in jobs if not Path(j[1]).exists()]
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        list(pool.map(_work, todo, chunksize=64))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a folder in the Kaggle layout (e.g. the sample)")
    parser.add_argument("out", type=Path, help="the folder to fill (created; existing copies are kept)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the database's counts (default 1)")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"make_size_check_folder: no such folder: {args.source}", file=sys.stderr)
        return 2
    counts = build(args.source, args.out, args.scale)
    print(f"{sum(counts.values())} images in {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
