"""Training engine: checkpoints, safe loading, kill-and-resume, torchrun, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlib.checkpoint import load_checkpoint, load_model
from cxrlib.cli import main
from cxrlib.config import CXRError
from cxrlib.evaluate import predict_split
from cxrlib.published import run_key
from cxrlib.recipe import WRITTEN_ONLY_WHEN_SET, TrainConfig, preset
from cxrlib.runs import describe_learning_curves, describe_outcome, run_outcome
from cxrlib.train import epoch_positions, fit_class_offsets, next_epoch_seconds, train

from conftest import CANONICAL, build_dataset
from tinyrun import TINY, tiny_run


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return build_dataset(tmp_path / "data", dict.fromkeys(CANONICAL, 12), size=40).path


def test_train_writes_run_folder(tiny_data: Path, tmp_path: Path) -> None:
    result = train(TINY, tmp_path / "run", data_dir=tiny_data, progress=False, log=lambda m: None)
    run = tmp_path / "run"
    for name in ("last.pt", "best.pt", "history.json", "config.json", "split.csv"):
        assert (run / name).is_file(), name
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert {"train_loss", "valid_accuracy", "valid_macro_auc", "lr", "seconds"} <= set(history[0])
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["img_size"] == 32 and config["pretrained_used"] is False
    assert result.best_epoch == max(range(3), key=lambda e: (history[e]["valid_macro_auc"], -e))
    assert result.stopped == "completed"


def test_checkpoint_alone_can_predict(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir, _ = tiny_run(tmp_path_factory)  # TINY on 12 images per class, trained once per session
    loaded = load_model(run_dir)
    assert loaded.classes == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert loaded.preprocessing.img_size == 32
    image = torch.zeros(1, 32, 32, dtype=torch.uint8)
    with torch.no_grad():
        logits = loaded.model(loaded.transform(image)[None])
    assert logits.shape == (1, 4)
    # plain torch.load with weights_only=True must work: no pickled code inside
    raw = torch.load(run_dir / "last.pt", weights_only=True)
    assert raw["epoch"] == 2 and "optimizer" in raw and "rng" in raw and "scheduler" in raw


class _Payload:
    def __reduce__(self):  # noqa: D105 - a pickle that would run code
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_payload_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": _Payload()}, bad)
    with pytest.raises(CXRError, match="refusing to load"):
        load_checkpoint(bad)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CXRError):
        load_checkpoint(junk)
    with pytest.raises(CXRError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CXRError, match="not a cxrlib checkpoint"):
        load_checkpoint(other)


def test_existing_run_is_not_overwritten(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    with pytest.raises(CXRError, match="already exists"):
        train(TINY, run, data_dir=tiny_data, progress=False, log=lambda m: None)
    assert (run / "notes.txt").read_text() == "keep me"


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import cxrlib.train as t
    from cxrlib.train import TrainConfig, train
    cfg = TrainConfig(**{cfg})
    real_save = t.save_checkpoint
    def save_then_maybe_die(obj, path):
        real_save(obj, path)
        if path.name == "last.pt" and obj["epoch"] == {kill_after}:
            os.kill(os.getpid(), signal.SIGKILL)
    t.save_checkpoint = save_then_maybe_die
    train(cfg, sys.argv[1], data_dir=sys.argv[2], progress=False, log=lambda m: None)
    """
)


def test_kill_and_resume_matches_uninterrupted(tiny_data: Path, tmp_path: Path) -> None:
    cfg = replace(TINY, epochs=4)
    reference = train(cfg, tmp_path / "straight", data_dir=tiny_data, progress=False, log=lambda m: None)

    fields = {k: v for k, v in cfg.to_dict().items() if k != "augment"}
    script = _KILL_SCRIPT.format(cfg=repr(fields), kill_after=1)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "killed"), str(tiny_data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] == 1

    resumed = train(cfg, tmp_path / "killed", resume=True, progress=False, log=lambda m: None)
    straight = json.loads((tmp_path / "straight" / "history.json").read_text())
    again = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert [h["epoch"] for h in again] == [0, 1, 2, 3]
    for a, b in zip(straight, again):
        for key in ("train_loss", "valid_loss", "valid_accuracy", "valid_macro_auc", "lr"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["epoch"], key)
    assert resumed.best_metrics == pytest.approx(reference.best_metrics)
    w1 = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    w2 = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_resume_without_run_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(CXRError, match="cannot resume"):
        train(TINY, tmp_path / "nothing", resume=True, progress=False)


def test_time_budget_stops_between_epochs(tiny_data: Path, tmp_path: Path) -> None:
    cfg = replace(TINY, epochs=50, max_minutes=1e-4)
    result = train(cfg, tmp_path / "run", data_dir=tiny_data, progress=False, log=lambda m: None)
    assert result.stopped == "time-budget"
    assert len(result.history) == 1  # the first epoch always runs, then the budget stops it


def test_presets_and_validation() -> None:
    assert preset("fast").fast_subset and preset("fast").img_size == 64
    assert preset("cpu").max_minutes is not None and preset("cpu").max_minutes <= 15
    assert preset("full").img_size == 224
    assert preset("cpu", epochs=2).epochs == 2
    with pytest.raises(CXRError):
        preset("nope")
    with pytest.raises(CXRError):
        preset("cpu", arch="vgg16")
    with pytest.raises(CXRError):
        preset("cpu", img_size=8)


def test_cli_train_errors(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "x").write_text("1")
    assert main(["train", "--data", str(tiny_data), "--out", str(existing), "--preset", "fast"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err

    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "--epochs", "0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0

    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        if os.access(readonly, os.W_OK):  # running as root: permissions do not bind
            target = Path("/proc/cxr-cannot-write-here")
        else:
            target = readonly / "run"
        assert main(["train", "--data", str(tiny_data), "--out", str(target), "--preset", "fast"]) == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        readonly.chmod(0o700)

    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_train_fast_preset_end_to_end(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "run"),
            "--preset",
            "fast",
            "--img-size",
            "32",
            "--epochs",
            "1",
            "--pretrained",
            "no",
            "--quiet",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "valid macro AUC" in out
    assert (tmp_path / "run" / "best.pt").is_file()


def test_torchrun_two_processes(tiny_data: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "cxrlib",
        "train",
        "--data",
        str(tiny_data),
        "--out",
        str(tmp_path / "ddp"),
        "--preset",
        "fast",
        "--img-size",
        "32",
        "--epochs",
        "2",
        "--pretrained",
        "no",
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert len(history) == 2
    # each of the 2 ranks saw half of the training images per epoch
    ckpt = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert np.isfinite(history[-1]["train_loss"])


def test_ensure_run_trains_once_then_reuses(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cxrlib.runs import ensure_run

    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    cfg = replace(TINY, epochs=1)
    first = ensure_run(cfg, "reuse", data_dir=tiny_data, progress=False, log=lambda m: None)
    stamp = (first / "best.pt").stat().st_mtime_ns
    second = ensure_run(cfg, "reuse", data_dir=tiny_data, progress=False, log=lambda m: None)
    assert second == first and (second / "best.pt").stat().st_mtime_ns == stamp
    changed = replace(cfg, seed=4)
    ensure_run(changed, "reuse", data_dir=tiny_data, progress=False, log=lambda m: None)
    assert (first / "best.pt").stat().st_mtime_ns != stamp  # another config retrains


# --------------------------------------------------------------------------- the budgeted schedule


def test_balanced_epochs_draw_each_class_equally_and_walk_through_every_image() -> None:
    labels = np.array([0] * 50 + [1] * 7 + [2] * 20)
    first = epoch_positions(labels, 30, seed=1, epoch=0)
    assert np.bincount(labels[first], minlength=3).tolist() == [10, 10, 10]
    # class 1 has 7 images: 10 draws show all 7 once, then 3 again
    assert set(first[labels[first] == 1]) == set(np.flatnonzero(labels == 1))
    # class 0 has 50: five epochs of 10 show each of them exactly once
    drawn = np.concatenate([epoch_positions(labels, 30, seed=1, epoch=e) for e in range(5)])
    assert sorted(drawn[labels[drawn] == 0].tolist()) == list(range(50))
    # a pure function of (labels, size, seed, epoch): what resuming relies on
    assert np.array_equal(first, epoch_positions(labels, 30, seed=1, epoch=0))
    assert not np.array_equal(first, epoch_positions(labels, 30, seed=2, epoch=0))


def test_class_weights_tilt_the_balanced_draws() -> None:
    labels = np.array([0] * 50 + [1] * 7 + [2] * 20)
    drawn = epoch_positions(labels, 35, seed=1, epoch=0, weights={1: 0.5})
    assert np.bincount(labels[drawn], minlength=3).tolist() == [14, 7, 14]
    assert np.array_equal(
        epoch_positions(labels, 30, seed=1, epoch=2, weights={}), epoch_positions(labels, 30, seed=1, epoch=2)
    )


def test_unbalanced_epoch_is_a_shuffled_pass() -> None:
    labels = np.array([0] * 50 + [1] * 7)
    one = epoch_positions(labels, 57, seed=0, epoch=3, balanced=False)
    assert sorted(one.tolist()) == list(range(57))
    with pytest.raises(CXRError):
        epoch_positions(labels, 0, seed=0, epoch=0)


def test_schedule_does_not_depend_on_the_size_of_the_data(tmp_path: Path) -> None:
    small = build_dataset(tmp_path / "small", dict.fromkeys(CANONICAL, 12), size=40).path
    large = build_dataset(tmp_path / "large", {**dict.fromkeys(CANONICAL, 12), "Normal": 60}, size=40).path
    cfg = replace(TINY, epochs=2, epoch_images=24)
    for name, data in (("small", small), ("large", large)):
        train(cfg, tmp_path / name / "run", data_dir=data, progress=False, log=lambda m: None)
    schedules = [json.loads((tmp_path / n / "run" / "config.json").read_text())["schedule"] for n in ("small", "large")]
    assert schedules[0] == schedules[1] == {"epochs": 2, "epoch_images": 24, "steps": 6, "images": 48}
    outcome = run_outcome(tmp_path / "large" / "run")
    assert outcome["stopped"] == "completed" and outcome["schedule_completed"] is True
    assert describe_outcome(tmp_path / "large" / "run").startswith(
        "The schedule completed: 2 of 2 epochs, 48 images (24 class-balanced draws per epoch)"
    )


def test_time_cap_is_recorded_in_config_and_history(tiny_data: Path, tmp_path: Path) -> None:
    cfg = replace(TINY, epochs=50, max_minutes=1e-4)
    train(cfg, tmp_path / "run", data_dir=tiny_data, progress=False, log=lambda m: None)
    outcome = run_outcome(tmp_path / "run")
    assert outcome["stopped"] == "time-budget" and outcome["schedule_completed"] is False
    assert (outcome["epochs_done"], outcome["epochs_planned"]) == (1, 50)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["stopped"] == "time-budget"
    sentence = describe_outcome(tmp_path / "run")
    assert "time cap stopped this run after 1 of 50 epochs" in sentence and "--resume" in sentence


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_ema_is_what_best_pt_holds_and_resumes_exactly(tiny_data: Path, tmp_path: Path, optimizer: str) -> None:
    cfg = replace(TINY, epochs=3, ema_decay=0.9, optimizer=optimizer, lr=3e-3 if optimizer == "adamw" else 0.05)
    train(cfg, tmp_path / "straight", data_dir=tiny_data, progress=False, log=lambda m: None)
    last = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "straight" / "best.pt", weights_only=True)
    assert "ema" in last and "ema" not in best
    averaged = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    if best["epoch"] == last["epoch"]:  # best.pt holds the average, not the raw weights
        assert all(torch.equal(best["model"][k], averaged[k]) for k in best["model"])
        assert not all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])
    history = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert {"valid_accuracy_raw", "valid_macro_auc_raw"} <= set(history[-1])
    assert "valid_accuracy_raw" not in history[0]  # the raw weights are validated at the last epoch only
    # stop after epoch 2 (the time cap) and resume: the same weights and average as straight through
    capped = replace(cfg, max_minutes=1e-4)
    train(capped, tmp_path / "resumed", data_dir=tiny_data, progress=False, log=lambda m: None)
    saved = json.loads((tmp_path / "resumed" / "config.json").read_text())
    saved["train"]["max_minutes"] = None
    (tmp_path / "resumed" / "config.json").write_text(json.dumps(saved))
    train(cfg, tmp_path / "resumed", resume=True, progress=False, log=lambda m: None)
    again = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert all(torch.equal(last["model"][k], again["model"][k]) for k in last["model"])
    assert all(torch.equal(last["ema"][k], again["ema"][k]) for k in last["ema"])
    assert run_outcome(tmp_path / "resumed")["stopped"] == "completed"


def test_bad_recipe_fields_are_one_line_errors() -> None:
    with pytest.raises(CXRError, match="optimizer"):
        preset("cpu", optimizer="lion")
    with pytest.raises(CXRError, match="epoch-images"):
        preset("cpu", epoch_images=0)
    with pytest.raises(CXRError, match="ema_decay"):
        preset("cpu", ema_decay=1.5)
    with pytest.raises(CXRError, match="class_shares"):
        preset("cpu", class_shares={"Lung_Opacity": 0.0})


def test_class_offsets_move_decisions_to_the_neglected_class() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 200)
    logits = rng.normal(size=(600, 3)) + 2.0 * np.eye(3)[labels]
    logits[:, 1] += 1.5  # a network leaning towards class 1
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    offsets = fit_class_offsets(probs, labels)
    assert abs(offsets.sum()) < 1e-9 and offsets[1] < -1.0  # it takes the lean back
    fixed = (np.log(probs) + offsets).argmax(1)
    assert (fixed == labels).mean() > (probs.argmax(1) == labels).mean()
    assert min((fixed[labels == k] == k).mean() for k in range(3)) > min(
        (probs.argmax(1)[labels == k] == k).mean() for k in range(3)
    )
    # a class absent from the images keeps offset 0 instead of running off to minus infinity
    present = labels != 2
    assert fit_class_offsets(probs[present], labels[present])[2] == 0.0


def test_class_offsets_are_folded_into_best_pt(tiny_data: Path, tmp_path: Path) -> None:
    cfg = replace(TINY, epochs=2, class_offsets=True, class_shares={"Lung_Opacity": 0.5})
    train(cfg, tmp_path / "run", data_dir=tiny_data, progress=False, log=lambda m: None)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    record = json.loads((tmp_path / "run" / "config.json").read_text())["class_offsets"]
    assert best["class_offsets"] == record and set(record["offsets"]) == set(CANONICAL)
    # what predicting the validation split sees is the folded model: its accuracy is the one recorded
    valid = predict_split(tmp_path / "run", tiny_data, split="valid")
    assert float((valid.predicted == valid.labels).mean()) == pytest.approx(record["valid_accuracy_after"])
    # refitting on the folded model finds (almost) nothing left to move
    assert np.abs(fit_class_offsets(valid.probs, valid.labels)).max() < 0.05
    with pytest.raises(CXRError, match="class_shares names"):
        train(
            replace(cfg, class_shares={"Cat": 2.0}),
            tmp_path / "bad",
            data_dir=tiny_data,
            progress=False,
            log=lambda m: None,
        )


@pytest.mark.parametrize("region", ["full", "hide-lungs"])
def test_eval_size_is_set_in_best_pt_before_the_offsets(tiny_data: Path, tmp_path: Path, region: str) -> None:
    """A run with ``eval_size_increase`` predicts at the larger size everywhere: ``best.pt``
    and ``config.json`` say so, and the offsets are fitted on the larger size's outputs."""
    cfg = replace(TINY, epochs=2, eval_size_increase=16, class_offsets=True, region=region)
    result = train(cfg, tmp_path / "run", data_dir=tiny_data, progress=False, log=lambda m: None)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert best["preprocessing"]["img_size"] == saved["preprocessing"]["img_size"] == 48
    assert saved["train"]["img_size"] == 32 and best["eval_size"] == saved["eval_size"]
    assert saved["eval_size"]["trained_img_size"] == 32 and saved["eval_size"]["eval_img_size"] == 48
    assert load_model(tmp_path / "run").preprocessing.img_size == 48
    assert "Predicting at 48 px, trained at 32 px: validation accuracy" in describe_outcome(tmp_path / "run")
    # the offsets were fitted at 48 px: the accuracy after them is what predicting at 48 px gives
    valid = predict_split(tmp_path / "run", tiny_data, split="valid")
    accuracy = float((valid.predicted == valid.labels).mean())
    assert accuracy == pytest.approx(saved["class_offsets"]["valid_accuracy_after"])
    assert result.best_metrics["valid_accuracy"] == pytest.approx(accuracy)
    assert saved["eval_size"]["valid_accuracy_eval_size"] == pytest.approx(
        saved["class_offsets"]["valid_accuracy_before"]
    )
    # a finished run resumed again changes nothing
    train(cfg, tmp_path / "run", data_dir=tiny_data, resume=True, progress=False, log=lambda m: None)
    again = load_checkpoint(tmp_path / "run" / "best.pt")
    assert again["preprocessing"]["img_size"] == 48 and again["class_offsets"] == best["class_offsets"]


def test_eval_size_increase_is_checked() -> None:
    with pytest.raises(CXRError, match="eval_size_increase"):
        replace(TINY, eval_size_increase=-8).validate()
    assert preset("cpu").eval_img_size == preset("cpu").img_size + preset("cpu").eval_size_increase


def test_mixup_is_checked_and_trains_repeatably(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(CXRError, match="mixup"):
        replace(TINY, mixup=-0.2).validate()
    cfg = replace(TINY, epochs=1, mixup=0.2)
    for name in ("a", "b"):
        train(cfg, tmp_path / name, data_dir=tiny_data, progress=False, log=lambda m: None)
    train(replace(cfg, mixup=0.0), tmp_path / "plain", data_dir=tiny_data, progress=False, log=lambda m: None)
    weights = {n: torch.load(tmp_path / n / "last.pt", weights_only=True)["model"] for n in ("a", "b", "plain")}
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])  # seeded
    assert not all(torch.equal(weights["a"][k], weights["plain"][k]) for k in weights["a"])  # it does something


def test_cutmix_is_checked_and_trains_repeatably(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(CXRError, match="cutmix"):
        replace(TINY, cutmix=1.5).validate()
    with pytest.raises(CXRError, match="switch one of them off"):
        replace(TINY, cutmix=0.5, mixup=0.2).validate()
    cfg = replace(TINY, epochs=1, cutmix=1.0)
    for name in ("a", "b", "plain"):
        run = replace(cfg, cutmix=0.0) if name == "plain" else cfg
        train(run, tmp_path / name, data_dir=tiny_data, progress=False, log=lambda m: None)
    weights = {n: torch.load(tmp_path / n / "last.pt", weights_only=True)["model"] for n in ("a", "b", "plain")}
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])  # seeded
    assert not all(torch.equal(weights["a"][k], weights["plain"][k]) for k in weights["a"])  # it does something


def test_progressive_resizing_ramps_to_the_final_size() -> None:
    ramp = preset("cpu", img_size=192, start_img_size=128)
    sizes = [ramp.img_size_at(e) for e in range(ramp.epochs)]
    assert sizes == [128] * 8 + [144] * 3 + [160] * 3 + [176] * 3 + [192] * 5
    assert sizes == sorted(sizes) and all(s % 16 == 0 for s in sizes)
    assert [preset("cpu").img_size_at(e) for e in range(3)] == [preset("cpu").img_size] * 3
    short = replace(TINY, epochs=2, img_size=48, start_img_size=32)
    assert [short.img_size_at(e) for e in range(2)] == [32, 48]  # the ramp ends at img_size
    with pytest.raises(CXRError, match="start_img_size"):
        replace(TINY, img_size=48, start_img_size=64).validate()


def test_the_time_cap_expects_a_larger_epoch_to_take_longer() -> None:
    fixed = preset("cpu")
    assert next_epoch_seconds(fixed, 3, [10.0, 12.0, 11.0]) == 12.0  # the slowest so far
    ramp = preset("cpu", img_size=192, start_img_size=128)
    # epochs 0-7 at 128 px, epoch 8 at 144 px: (144 / 128) ** 2 times the slowest
    assert next_epoch_seconds(ramp, 8, [10.0] * 8) == pytest.approx(10.0 * (144 / 128) ** 2)
    # a resumed run has measured only its own epochs (here 17 and 18, at 192 px)
    assert next_epoch_seconds(ramp, 19, [20.0, 21.0]) == 21.0


def test_progressive_resizing_trains_each_epoch_at_its_size(tiny_data: Path, tmp_path: Path) -> None:
    cfg = replace(TINY, epochs=3, img_size=48, start_img_size=32)
    train(cfg, tmp_path / "run", data_dir=tiny_data, progress=False, log=lambda m: None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["img_size"] for h in history] == [cfg.img_size_at(e) for e in range(3)] == [32, 32, 48]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["preprocessing"]["img_size"] == 48


def test_an_option_added_later_leaves_earlier_runs_configuration_alone() -> None:
    # runs trained before mixup existed are stored and published under a configuration
    # without it: with mixup off, the configuration (and so the run's key) is the same
    cpu = preset("cpu")
    assert "mixup" not in cpu.to_dict() and TrainConfig.from_dict(cpu.to_dict()) == cpu
    mixed = preset("cpu", mixup=0.2)
    assert mixed.to_dict()["mixup"] == 0.2 and TrainConfig.from_dict(mixed.to_dict()) == mixed
    assert run_key(mixed.to_dict(), "v1") != run_key(cpu.to_dict(), "v1")
    assert set(cpu.to_dict()) == {f.name for f in fields(TrainConfig)} - set(WRITTEN_ONLY_WHEN_SET)


def test_cpu_preset_is_a_budget_not_a_pass_count() -> None:
    cpu = preset("cpu")
    assert cpu.epoch_images and cpu.balanced and cpu.pretrained == "auto"
    assert cpu.max_minutes is not None and cpu.max_minutes <= 15
    assert cpu.class_offsets  # fitted on validation after training (chapter 3)


def test_training_seeds_share_one_split(tiny_data: Path, tmp_path: Path) -> None:
    """Another seed changes the weights, never which images are validation and test."""
    for seed in (3, 4):
        train(
            replace(TINY, epochs=1, seed=seed),
            tmp_path / f"s{seed}",
            data_dir=tiny_data,
            progress=False,
            log=lambda m: None,
        )
    assert (tmp_path / "s3" / "split.csv").read_text() == (tmp_path / "s4" / "split.csv").read_text()
    w3 = torch.load(tmp_path / "s3" / "best.pt", weights_only=True)["model"]
    w4 = torch.load(tmp_path / "s4" / "best.pt", weights_only=True)["model"]
    assert not torch.equal(w3["fc.weight"], w4["fc.weight"])
    other_split = replace(TINY, epochs=1, split_seed=1)
    train(other_split, tmp_path / "split1", data_dir=tiny_data, progress=False, log=lambda m: None)
    assert (tmp_path / "split1" / "split.csv").read_text() != (tmp_path / "s3" / "split.csv").read_text()


def test_progress_shows_epochs_but_no_batch_bars_off_a_terminal(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a notebook (stderr is not a terminal) a per-batch bar per epoch would leave one
    empty widget per epoch on the rendered page; only the epochs bar is shown."""
    train(replace(TINY, epochs=2), tmp_path / "run", data_dir=tiny_data, progress=True, log=lambda m: None)
    err = capsys.readouterr().err
    assert "epochs" in err and "batch" not in err


def _history(train_loss: list[float], valid_loss: list[float], peak: float = 2e-3) -> list[dict[str, float]]:
    """A history.json with these losses and a warm-up, then cosine, learning rate."""
    n = len(train_loss)
    lrs = [peak * (e + 1) / 2 if e < 2 else peak * 0.5 * (1 + np.cos(np.pi * (e - 1) / (n - 2))) for e in range(n)]
    return [
        {"epoch": e, "train_loss": t, "valid_loss": v, "lr": lr, "seconds": 30.0}
        for e, (t, v, lr) in enumerate(zip(train_loss, valid_loss, lrs))
    ]


def test_learning_curves_are_read_for_a_longer_schedule_or_overfitting() -> None:
    falling = _history([1.0 - 0.05 * e for e in range(12)], [0.9 - 0.04 * e for e in range(12)])
    sentence = describe_learning_curves(falling, best_epoch=11, peak_lr=2e-3)
    assert sentence.startswith(
        "Best epoch 12 of 12 (by validation macro AUC). Over the last 3 epochs the "
        "training loss changed by -0.100 and the validation loss by -0.080; the learning "
        "rate ended at 0, from the schedule's peak of 0.002."
    )
    assert "still falling when the schedule ended, with the best epoch at the end" in sentence
    assert "a longer schedule (more epochs, annealed over all of them) would likely help" in sentence
    assert "epochs added after this one would train at a learning rate near zero" in sentence
    overfitting = _history([1.0 - 0.05 * e for e in range(12)], [0.5 + 0.02 * e for e in range(12)])
    sentence = describe_learning_curves(overfitting, best_epoch=3, peak_lr=2e-3)
    assert sentence.startswith("Best epoch 4 of 12") and "the model had started to overfit" in sentence
    flat = _history([0.5] * 12, [0.4] * 12)
    sentence = describe_learning_curves(flat, best_epoch=5, peak_lr=2e-3)
    assert sentence.endswith("more epochs alone are unlikely to help.")
    assert describe_learning_curves(flat[:1], best_epoch=0, peak_lr=2e-3).startswith("One epoch only")
    # a short run's history (end-of-epoch values) misses the peak reached within an epoch: the peak is the config's
    short = [{**h, "lr": lr} for h, lr in zip(falling[:2], (1.2e-3, 1e-4))]
    sentence = describe_learning_curves(short, best_epoch=1, peak_lr=2e-3)
    assert "the learning rate ended at 0.0001, from the schedule's peak of 0.002." in sentence
    assert "epochs added after this one would train at a learning rate near zero" in sentence  # 0.0001 <= 5% of 0.002
    still_high = [{**h, "lr": lr} for h, lr in zip(falling[:2], (1.2e-3, 6e-4))]
    assert "near zero" not in describe_learning_curves(still_high, best_epoch=1, peak_lr=2e-3)


def _finished_run(folder: Path, offsets: dict[str, float] | None) -> Path:
    folder.mkdir()
    saved: dict[str, object] = {
        "train": {"balanced": True, "max_minutes": None, "patience": None},
        "schedule": {"epochs": 2, "epoch_images": 8},
        "outcome": {"stopped": "completed"},
    }
    if offsets is not None:
        saved["class_offsets"] = {"offsets": offsets, "valid_accuracy_before": 0.9, "valid_accuracy_after": 0.92}
    (folder / "config.json").write_text(json.dumps(saved))
    (folder / "history.json").write_text(json.dumps(_history([1.0, 0.8], [0.9, 0.7])))
    return folder


def test_outcome_reads_the_lean_from_the_class_offsets(tmp_path: Path) -> None:
    leaning = {"COVID": 0.26, "Lung_Opacity": 0.02, "Normal": -0.49, "Viral Pneumonia": 0.21}
    sentence = describe_outcome(_finished_run(tmp_path / "leaning", leaning))
    assert sentence.startswith("The schedule completed: 2 of 2 epochs, 16 images")
    assert (
        "Normal -0.49, Viral Pneumonia +0.21 (added to the logits); validation accuracy 0.900 before, 0.920 after."
        in sentence
    )
    assert sentence.endswith(
        "The most negative offset is Normal's: the network leaned towards Normal, and the "
        "offsets move close calls away from it."
    )
    level = dict.fromkeys(leaning, 0.0) | {"COVID": 0.05, "Normal": -0.05}
    assert describe_outcome(_finished_run(tmp_path / "level", level)).endswith(
        "No offset is below -0.1: the network hardly leaned towards any class."
    )
    assert "offset" not in describe_outcome(_finished_run(tmp_path / "none", None))
