"""A tiny trained run shared by the evaluation, prediction, CAM and explorer tests.

Training takes a few seconds, so it happens once per test session (per xdist worker), in
its own cache folder: the per-test ``CXR_CACHE_DIR`` of conftest's ``isolated_env`` does
not apply to it, and tests only read the run (they may add a prediction cache beside it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrlib.recipe import TrainConfig
from cxrlib.train import train

from conftest import CANONICAL, build_dataset

#: A configuration small enough for a few seconds per run on 2 cores (test_train uses it too).
TINY = TrainConfig(
    preset="test", img_size=32, epochs=3, batch_size=8, lr=3e-3, valid_size=8, test_size=8, pretrained="no", seed=3
)

_cache: dict[str, tuple[Path, Path]] = {}


def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(run folder, data folder)``: 12 synthetic 40-px images per class, TINY trained on them."""
    if "run" not in _cache:
        base = tmp_path_factory.mktemp("tiny-run")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CXR_CACHE_DIR", str(base / "cache"))
            for var in ("CXR_DATA_DIR", "CXR_FAST", "CXR_RUNS_DIR"):
                mp.delenv(var, raising=False)
            data = build_dataset(base / "data", dict.fromkeys(CANONICAL, 12), size=40).path
            train(TINY, base / "run", data_dir=data, progress=False, log=lambda m: None)
        _cache["run"] = (base / "run", data)
    return _cache["run"]
