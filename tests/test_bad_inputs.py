"""Bad input, as users give it: each case is a non-zero exit, the reason on stderr's last line, no
traceback, and nothing written where nothing should be.

Each case is (name, setup, argv, expected): ``setup(tmp)`` prepares files under the test's folder
and returns a dict of names usable in ``argv`` as ``{name}``; ``expected`` is a regular expression
searched in the last line of stderr.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from augforge.cli import main

TINY = ["--preset", "tiny", "--no-progress", "--no-samples"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny study (flip, one seed, one epoch), copied by each case that damages it."""
    out = tmp_path_factory.mktemp("finished") / "study"
    assert (
        main(["bench", "--strategy", "flip", "--no-baseline", "--set", "train.epochs=1", "--out", str(out), *TINY]) == 0
    )
    return out


def _damaged(tmp: Path, finished: Path, file: str, change) -> dict[str, str]:
    out = tmp / "study"
    shutil.copytree(finished, out)
    path = out / file
    path.write_bytes(change(path.read_bytes()))
    return {"out": str(out)}


def _record(change):
    """A change to the first trials.jsonl record, as JSON."""

    def apply(raw: bytes) -> bytes:
        lines = raw.decode().splitlines()
        rec = json.loads(lines[0])
        change(rec)
        return ("\n".join([json.dumps(rec), *lines[1:]]) + "\n").encode()

    return apply


def _csv_cell(column: str, value: str):
    def apply(raw: bytes) -> bytes:
        lines = raw.decode().splitlines()
        header = lines[0].split(",")
        cells = lines[1].split(",")
        cells[header.index(column)] = value
        return ("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n").encode()

    return apply


def _file(tmp: Path, name: str, text: str) -> dict[str, str]:
    (tmp / name).write_text(text)
    return {name.split(".")[0]: str(tmp / name)}


BENCH = ["bench", "--strategy", "flip", "--out", "{tmp}/run", *TINY]
REPORT = ["report", "{out}"]
CASES = [
    # -- a results folder that is not what augforge wrote (augforge report) -------------------------
    ("record without strategy", "strategy", REPORT, r"trials.jsonl:1: not a trial record \(no 'strategy'\)"),
    ("record without dataset", "dataset", REPORT, r"trials.jsonl:1: not a trial record \(no dataset fingerprint\)"),
    ("record without seed", "seed", REPORT, r"trials.jsonl:1: not a trial record \(no 'seed'\)"),
    ("record without config", "config", REPORT, r"not a trial record \(no 'config'\)"),
    ("record without key", "key", REPORT, r"not a trial record \(no 'key'\)"),
    ("seed as text", ("seed", "zero"), REPORT, r"not a trial record \('seed' is str\)"),
    ("fraction as text", ("train_fraction", "all"), REPORT, r"not a trial record \('train_fraction' is str\)"),
    ("seed as boolean", ("seed", True), REPORT, r"not a trial record \('seed' is bool\)"),
    ("dataset as text", ("dataset", "lidc"), REPORT, r"not a trial record \(no dataset fingerprint\)"),
    ("binary trials.jsonl", b"\x00\xff\xfe" * 40, REPORT, r"trials.jsonl: not UTF-8 text"),
    ("a JSON list as record", b"[1, 2, 3]\n", REPORT, r"trials.jsonl:1: not a trial record \(not a JSON object\)"),
    ("a line that is not JSON", b'{"key": \n', REPORT, r"trials.jsonl:1: not a trial record"),
    (
        "truncated per_image.csv",
        ("per_image.csv", lambda b: b[:-30]),
        REPORT,
        r"per_image.csv:\d+: unreadable row \(row of a different length than the header\)",
    ),
    (
        "Dice that is not a number",
        ("per_image.csv", _csv_cell("dice", "high")),
        REPORT,
        r"per_image.csv:2: unreadable row",
    ),
    (
        "binary per_image.csv",
        ("per_image.csv", lambda b: b"\xff\xfe\x00garbage"),
        REPORT,
        r"per_image.csv: not a CSV file augforge wrote",
    ),
    (
        "per_image.csv without columns",
        ("per_image.csv", lambda b: b"trial,dice\nx,1\n"),
        REPORT,
        r"per_image.csv: missing columns",
    ),
    ("floors.csv without columns", ("floors.csv", lambda b: b"key\nx\n"), REPORT, r"floors.csv: missing columns"),
    ("report of a folder without results", "empty", ["report", "{tmp}"], r"no trials.jsonl here"),
    # -- the results folder itself ------------------------------------------------------------------
    (
        "--out is a file",
        "afile",
        ["bench", "--strategy", "flip", "--out", "{afile}", *TINY],
        r"--out .*afile: is a file",
    ),
    (
        "--out name too long",
        None,
        ["bench", "--strategy", "flip", "--out", "{tmp}/" + "a" * 300, *TINY],
        r"is 300 bytes long; file names hold at most 255",
    ),
    # -- seeds, fractions, strategies ---------------------------------------------------------------
    ("a trillion seeds", None, [*BENCH, "--seeds", "1000000000000"], r"Invalid value for '--seeds'"),
    ("zero seeds", None, [*BENCH, "--seeds", "0"], r"Invalid value for '--seeds'"),
    ("train fraction 0", None, [*BENCH, "--train-fraction", "0"], r"--train-fraction 0: give a fraction in \(0, 1\]"),
    ("train fraction 1.5", None, [*BENCH, "--train-fraction", "1.5"], r"--train-fraction 1.5: give a fraction"),
    (
        "unknown strategy",
        None,
        ["bench", "--strategy", "fliip", "--out", "{tmp}/run", *TINY],
        r"unknown strategy 'fliip'",
    ),
    ("empty part of a hybrid", None, ["bench", "--strategy", "flip+", "--out", "{tmp}/run", *TINY], r"empty part"),
    ("unknown preset", None, ["bench", "--strategy", "flip", "--preset", "huge", "--out", "{tmp}/run"], r"huge"),
    ("unknown executor", None, [*BENCH, "--executor", "cloud"], r"cloud"),
    (
        "--ray-address without ray",
        None,
        [*BENCH, "--ray-address", "localhost:1"],
        r"--ray-address needs --executor ray",
    ),
    # -- settings ------------------------------------------------------------------------------------
    ("unknown section", None, [*BENCH, "--set", "trian.lr=1"], r"trian"),
    ("unknown field", None, [*BENCH, "--set", "train.lrate=1"], r"lrate"),
    ("a word for a number", None, [*BENCH, "--set", "train.epochs=many"], r"train.epochs"),
    (
        "negative learning rate",
        None,
        [*BENCH, "--set", "train.lr=-1"],
        r"train.lr: -1.0 is not above the minimum 0 \(a positive learning rate",
    ),
    ("NaN learning rate", None, [*BENCH, "--set", "train.lr=nan"], r"train.lr: nan is not a finite number"),
    (
        "depth 100",
        None,
        [*BENCH, "--set", "model.depth=100"],
        r"model.depth: 100 is outside \[1, 7\] \(down-sampling steps",
    ),
    ("threshold 2", None, [*BENCH, "--set", "train.threshold=2"], r"train.threshold: 2.0 is outside \(0, 1\)"),
    ("negative threads", None, [*BENCH, "--set", "train.threads=-3"], r"train.threads: -3 is below the minimum 0"),
    ("batch size 0", None, [*BENCH, "--set", "train.batch_size=0"], r"train.batch_size: 0 is below the minimum 1"),
    (
        "foreground share 2",
        None,
        [*BENCH, "--set", "train.fg_fraction=2"],
        r"train.fg_fraction: 2.0 is outside \[0, 1\]",
    ),
    (
        "patch not a multiple of 4",
        None,
        [*BENCH, "--set", "train.patch_size=30"],
        r"train.patch_size: 30 is not a multiple of 4",
    ),
    (
        "unknown optimiser",
        None,
        [*BENCH, "--set", "train.optimizer=lion"],
        r"train.optimizer: 'lion' is not one of sgd, adam",
    ),
    ("generator epochs 0", None, [*BENCH, "--set", "gen.epochs=0"], r"gen.epochs: 0 is below the minimum 1"),
    (
        "generator patch 12",
        None,
        [*BENCH, "--set", "gen.roi_size=12"],
        r"gen.roi_size: 12 is not one of 8, 16, 32, 64, 128, 256 \(a power of two",
    ),
    ("unknown input", None, [*BENCH, "--set", "data.input=lungs"], r"lungs"),
    ("strategy parameter out of range", None, [*BENCH, "--set", "flip.p=2"], r"flip.p"),
    # -- data -----------------------------------------------------------------------------------------
    ("missing data path", None, [*BENCH, "--data", "{tmp}/nowhere"], r"nowhere"),
    ("unrecognised data folder", "emptydir", [*BENCH, "--data", "{emptydir}"], r"emptydir"),
    # -- study files ----------------------------------------------------------------------------------
    ("missing study file", None, ["bench", "--study", "{tmp}/none.toml", *TINY], r"none.toml"),
    ("study file that switches on unpickling", "pickle", ["bench", "--study", "{pickle}", *TINY], r"allow_pickle"),
    ("study file with a typo", "typo", ["bench", "--study", "{typo}", *TINY], r"seedz"),
]

_STUDY_HEAD = '[study]\npreset = "tiny"\ndata = "lidc-phantom"\n'


def _setup(tmp: Path, finished: Path, how) -> dict[str, str]:
    if how is None:
        return {}
    if how == "empty":
        return {}
    if how == "afile":
        return _file(tmp, "afile", "x")
    if how == "emptydir":
        (tmp / "emptydir").mkdir()
        (tmp / "emptydir" / "notes.txt").write_text("no images here")
        return {"emptydir": str(tmp / "emptydir")}
    if how == "pickle":
        return _file(tmp, "pickle.toml", _STUDY_HEAD + 'allow_pickle = true\n[[strategy]]\nname = "flip"\n')
    if how == "typo":
        return _file(tmp, "typo.toml", _STUDY_HEAD + 'seedz = 3\n[[strategy]]\nname = "flip"\n')
    if isinstance(how, bytes):
        return _damaged(tmp, finished, "trials.jsonl", lambda raw: how)
    if isinstance(how, str):
        return _damaged(tmp, finished, "trials.jsonl", _record(lambda r: r.pop(how)))
    if isinstance(how, tuple) and callable(how[1]):
        return _damaged(tmp, finished, how[0], how[1])
    field_, value = how
    return _damaged(tmp, finished, "trials.jsonl", _record(lambda r: r.__setitem__(field_, value)))


@pytest.mark.parametrize(("name", "how", "argv", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(tmp_path, finished, capsys, name, how, argv, expected):
    names = {"tmp": str(tmp_path), **_setup(tmp_path, finished, how)}
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    rc = main([a.format(**names) for a in argv])
    err = capsys.readouterr().err
    assert rc != 0, f"{name}: exit 0"
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert re.search(expected, last), f"{name}: {last!r}"
    # Nothing half-written: the files that were there are unchanged, and no results appeared.
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == {p: b for p, b in before.items() if p.name != ".lock"}, f"{name}: files changed"


def test_there_are_at_least_forty_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (OSError(28, "No space left on device", "/results/trials.jsonl"), "No space left on device"),
        (OSError(30, "Read-only file system", "/results/trials.jsonl"), "Read-only file system"),
        (OSError(13, "Permission denied", "/results/trials.jsonl"), "Permission denied"),
    ],
)
def test_a_full_disk_or_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch, error, fragment):
    """The machine refusing a write (tested by injection: root ignores permissions here)."""
    from augforge.bench import store as store_module

    def refuse(path, text):
        raise error

    monkeypatch.setattr(store_module, "atomic_write_text", refuse)
    rc = main(
        [
            "bench",
            "--strategy",
            "flip",
            "--no-baseline",
            "--set",
            "train.epochs=1",
            "--out",
            str(tmp_path / "run"),
            *TINY,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("error: /results/trials.jsonl: " + fragment)
    assert "rerun to resume" in err
