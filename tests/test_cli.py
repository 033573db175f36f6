"""``cxr`` never shows a traceback.

``cxr``, ``cxr --help``, and for every subcommand (found by walking the parser, so a new
one is covered without editing this file): ``--help``; no arguments; a bad value for
each option that takes one. Help exits 0; a usage error (or an error the user can fix)
exits 2 with exactly one line on stderr; nothing prints "Traceback". An internal error (a
bug) prints one line naming the report file that holds the traceback, and exits 1.

Every case runs in-process through :func:`cxrlib.cli.main` (fast); two subprocesses check
the real entry point, ``python -m cxrlib``, and that the parser does not import torch.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cxrlib import cli, config

from conftest import subprocess_env

# --------------------------------------------------------------------------- the parser, walked


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(found) <= 1
    return dict(found[0].choices) if found else {}


SUBCOMMANDS = _subparsers(cli.build_parser())


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0  # flags (store_true, --help) take none


def _name(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


#: Out-of-range values for each value type the CLI uses, besides "not-a-number". A new type
#: must be added here (test_every_option_has_bad_values says so).
RANGE_VALUES: dict[Callable[[str], object], list[str]] = {
    int: [],
    float: [],
    cli._int: [],
    cli._positive_int: ["0", "-3"],
    cli._non_negative_int: ["-1"],
    cli._image_size: ["31", "0"],
    cli._positive_float: ["0", "-1", "nan", "inf"],
}

#: Bad values of the options that take a path: a missing folder or file, or a path that
#: cannot be created because its parent is a file. Keyed by (subcommand, dest).
PATH_VALUES: dict[tuple[str, str], list[str]] = {
    ("data", "data_dir"): ["missing"],
    ("data", "write_split"): ["under-a-file", "a-folder"],
    ("train", "data"): ["missing", "a-file"],
    ("train", "out"): ["under-a-file", "a-file"],
    ("evaluate", "run"): ["missing"],
    ("evaluate", "data"): ["missing"],
    ("predict", "run"): ["missing"],
    ("predict", "cam"): ["under-a-file", "a-file"],
    ("bench", "data"): ["missing"],
    ("bench", "run"): ["missing", "a-folder"],
}

#: Options that take a value but have no bad value that is a usage error, with the reason.
NO_BAD_VALUE: dict[tuple[str, str], str] = {
    ("predict", "images"): "a missing or unreadable image is not a usage error: after the model loads it is "
    "reported on its own line, the other images are predicted, and the exit code is 1 (tests/test_predict_cli.py)",
}


def _path_value(kind: str, tmp: Path) -> str:
    a_file = tmp / "a-file.txt"
    a_file.write_text("not a folder")
    (tmp / "a-folder").mkdir(exist_ok=True)
    return str(
        {"missing": tmp / "missing", "under-a-file": a_file / "x", "a-file": a_file, "a-folder": tmp / "a-folder"}[kind]
    )


def _bad_values(command: str, action: argparse.Action) -> list[str]:
    """Bad values of ``action`` (path values are kinds, made concrete by _path_value)."""
    if action.choices is not None:
        return ["not-a-choice"]
    if action.type is not None:
        return ["not-a-number", *RANGE_VALUES[action.type]]
    return PATH_VALUES.get((command, action.dest), [])


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for command, sub in SUBCOMMANDS.items():
        for action in filter(_takes_value, sub._actions):
            if (command, action.dest) in NO_BAD_VALUE:
                continue
            for value in _bad_values(command, action):
                cases.append((command, action.dest, value))
    return cases


def _base_value(action: argparse.Action, tmp: Path) -> str:
    """A value for a required argument that is not the one under test: never reached when
    the value under test is bad (each is checked before the others are used)."""
    return str(tmp / f"base-{action.dest}")


def _argv(command: str, tmp: Path, bad: tuple[str, str] | None = None) -> list[str]:
    """``command`` with each required argument given, and ``bad`` = (dest, value) set."""
    positional, optional = [], []
    for action in filter(_takes_value, SUBCOMMANDS[command]._actions):
        value = None
        if bad is not None and action.dest == bad[0]:
            value = bad[1]
        elif action.required:
            value = _base_value(action, tmp)
        if value is None:
            continue
        if action.option_strings:
            optional += [action.option_strings[-1], value]
        else:
            positional.append(value)
    return [command, *positional, *optional]


# --------------------------------------------------------------------------- running it


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    """``cxr ARGV`` in-process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str) -> None:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("cxr"), err
    assert "Traceback" not in err and "usage:" not in err, err


class LongWork(AssertionError):
    pass


#: Subcommands whose work is a download: run without arguments they state what they fetch
#: (one line), then, with no network, fail with one line.
DOWNLOADS = {"download"}


@pytest.fixture
def nothing_to_find(monkeypatch: pytest.MonkeyPatch) -> None:
    """No data anywhere (kagglehub's cache is not asked, and a download finds no network),
    and whatever starts real work (a data scan, a benchmark, a training) fails the test if
    reached."""
    import kagglehub
    import requests

    import cxrlib.bench
    import cxrlib.data
    import cxrlib.evaluate
    import cxrlib.runs
    import cxrlib.train

    monkeypatch.setattr(config, "_kagglehub_path", lambda handle: None)

    def no_network(handle: str, *args: object, **kwargs: object) -> str:
        raise requests.ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", no_network)

    def refuse(what: str) -> Callable[..., object]:
        def started(*args: object, **kwargs: object) -> object:
            raise LongWork(f"a bad value started long work: {what}")

        return started

    for module, name in (
        (cxrlib.data, "find_dataset_root"),
        (cxrlib.evaluate, "find_dataset_root"),
        (cxrlib.bench, "bench_training"),
        (cxrlib.bench, "bench_explorer"),
        (cxrlib.runs, "ensure_run"),
        (cxrlib.train, "pick_device"),
    ):
        monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))


# --------------------------------------------------------------------------- the parser's shape


def test_subcommands_found() -> None:
    assert {"download", "data", "train", "evaluate", "predict", "bench"} <= set(SUBCOMMANDS)
    assert DOWNLOADS <= set(SUBCOMMANDS)
    assert _cases(), "no bad values generated"


def test_every_option_has_bad_values() -> None:
    """Each option that takes a value gets a bad value here, or is listed with a reason."""
    missing = []
    for command, sub in SUBCOMMANDS.items():
        for action in filter(_takes_value, sub._actions):
            if action.type is not None:
                assert action.type in RANGE_VALUES, f"cxr {command} {_name(action)}: add its type to RANGE_VALUES"
            if (command, action.dest) not in NO_BAD_VALUE and not _bad_values(command, action):
                missing.append(f"cxr {command} {_name(action)}")
    assert not missing, f"add bad values to PATH_VALUES (or a reason to NO_BAD_VALUE) for: {missing}"
    listed = {*PATH_VALUES, *NO_BAD_VALUE}
    known = {(c, a.dest) for c, sub in SUBCOMMANDS.items() for a in sub._actions}
    assert listed <= known, f"stale entries: {listed - known}"


def test_arch_choices_match_the_models() -> None:
    """cli keeps a copy of the architecture names (importing cxrlib.models imports torch)."""
    from cxrlib.models import ARCHITECTURES

    assert cli.ARCHITECTURES == ARCHITECTURES
    for command in ("train", "bench"):
        arch = next(a for a in SUBCOMMANDS[command]._actions if a.dest == "arch")
        assert tuple(arch.choices) == ARCHITECTURES


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, [flag])
    assert code == 0 and err == ""
    assert out.startswith("usage: cxr")
    for command in SUBCOMMANDS:
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), f"{command} not listed:\n{out}"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, [command, "--help"])
    assert code == 0 and err == ""
    assert out.startswith(f"usage: cxr {command}")
    for action in SUBCOMMANDS[command]._actions:
        for option in action.option_strings:
            assert option in out


# --------------------------------------------------------------------------- usage errors


def test_no_command_is_one_line_listing_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, [])
    assert code == 2 and out == ""
    assert_one_line(err)
    assert err.startswith("cxr: error: no command given")
    assert all(command in err for command in SUBCOMMANDS)
    assert err.rstrip().endswith("(see cxr --help)")


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["--no-such-option"],
        ["--no-such-option", "data"],
        ["data", "--no-such-option"],
        ["data", "one", "two"],
        ["train", "--out"],
    ],
    ids=" ".join,
)
def test_unknown_arguments(argv: list[str], capsys: pytest.CaptureFixture[str], nothing_to_find: None) -> None:
    code, out, err = run(capsys, argv)
    assert code == 2 and out == ""
    assert_one_line(err)
    assert err.rstrip().endswith("--help)"), err


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_without_arguments(command: str, capsys: pytest.CaptureFixture[str], nothing_to_find: None) -> None:
    """A usage error (a required argument missing), or, for the subcommands that need none
    (their data comes from CXR_DATA_DIR or kagglehub's cache), the one-line "no data" error;
    a download states its size, then fails offline with one line that says what to do."""
    code, out, err = run(capsys, [command])
    assert code == 2 and out == "", err
    if command in DOWNLOADS:
        notice, err = err.split("\n", 1)
        assert f"about {config.DOWNLOAD_SIZE_MB} MB" in notice and "No Kaggle account needed" in notice, notice
        assert_one_line(err)
        assert err.startswith("cxr: error: could not download") and "CXR_DATA_DIR" in err, err
        return
    assert_one_line(err)
    usage_error = SUBCOMMANDS[command].prog in err and err.rstrip().endswith(f"(see cxr {command} --help)")
    assert usage_error or err.startswith("cxr: error: No chest X-ray data found"), err


@pytest.mark.parametrize(("command", "dest", "value"), _cases(), ids=lambda v: str(v))
def test_bad_value(
    command: str, dest: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], nothing_to_find: None
) -> None:
    action = next(a for a in SUBCOMMANDS[command]._actions if a.dest == dest)
    if action.type is None and action.choices is None:
        value = _path_value(value, tmp_path)
    argv = _argv(command, tmp_path, (dest, value))
    code, out, err = run(capsys, argv)
    assert code == 2, (argv, err)
    assert out == ""
    assert_one_line(err)
    # the line is about the bad value, not about something else
    assert any(option in err for option in action.option_strings) or value in err, (argv, err)


# --------------------------------------------------------------------------- errors that are not usage errors


def test_user_error_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fails(args: argparse.Namespace) -> int:
        raise config.CXRError("first line\n  second line")

    monkeypatch.setattr(cli, SUBCOMMANDS["data"].get_default("func").__name__, fails)
    assert run(capsys, ["data"]) == (2, "", "cxr: error: first line second line\n")


def test_interrupt_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, SUBCOMMANDS["data"].get_default("func").__name__, interrupted)
    assert run(capsys, ["data"]) == (130, "", "cxr: interrupted\n")


REPORT_LINE = re.compile(r"^cxr: internal error: (?P<what>.*) \(full report: (?P<path>.+)\)\n\Z")


def _crash(
    command: str, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: Exception
) -> tuple[str, Path, str]:
    """Run ``command`` with its function raising ``exc``: (what, report path, report text)."""

    def broken_subcommand(args: argparse.Namespace) -> int:
        raise exc

    monkeypatch.setattr(cli, SUBCOMMANDS[command].get_default("func").__name__, broken_subcommand)
    code, out, err = run(capsys, _argv(command, tmp))
    assert code == 1 and out == ""
    assert_one_line(err)
    match = REPORT_LINE.match(err)
    assert match, err
    report = Path(match["path"])
    assert report.is_file() and report.name.startswith("cxr-crash-") and report.suffix == ".txt"
    text = report.read_text()
    assert "Traceback (most recent call last)" in text and "broken_subcommand" in text
    assert f"command: cxr {command}" in text
    return match["what"], report, text


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_internal_error_is_one_line_and_a_report(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    what, report, text = _crash(command, tmp_path, monkeypatch, capsys, RuntimeError("it broke\non two lines"))
    assert what == "RuntimeError: it broke on two lines"
    assert report.parent == config.cache_dir() / "crash-reports"
    assert "RuntimeError: it broke\non two lines" in text


def test_internal_error_report_falls_back_to_the_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("CXR_CACHE_DIR", str(blocker))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    what, report, _ = _crash("data", tmp_path, monkeypatch, capsys, ValueError())
    assert what == "ValueError"
    assert report.parent == tmp_path / "tmp"


def test_internal_error_without_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(cli, "_crash_folders", lambda: [blocker / "x"])

    def broken(args: argparse.Namespace) -> int:
        raise OSError("disk on fire")

    monkeypatch.setattr(cli, SUBCOMMANDS["data"].get_default("func").__name__, broken)
    code, out, err = run(capsys, ["data"])
    assert (code, out) == (1, "")
    assert err == "cxr: internal error: OSError: disk on fire (no report could be written)\n"


# --------------------------------------------------------------------------- the real entry point


def test_python_dash_m_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cxrlib", "--help"], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("usage: cxr")
    assert all(command in proc.stdout for command in SUBCOMMANDS)


def test_parser_does_not_import_torch() -> None:
    """``cxr --help`` and usage errors stay fast (and work with a broken torch install)."""
    heavy = "('torch', 'torchvision', 'numpy')"
    code = (
        "import sys; from cxrlib import cli; cli.build_parser(); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
