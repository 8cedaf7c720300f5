"""The same seeds give the same bytes: a tiny study's per-image and leaderboard CSVs are kept in
tests/data/golden-study/, and rerunning the study must reproduce them exactly.

This guards refactors of the core (planning, validation, seeding, the plugins' imports): any change
that moves one trial's result, however slightly, fails here. A change *meant* to move results
rebuilds the kept CSVs with the command in ``_rebuild_hint`` and says why in its commit.

The kept bytes were produced with the torch build and machine type in ``golden-study/ENV``;
floating-point kernels differ between torch builds and CPU architectures, so elsewhere the test is
skipped with that reason rather than reporting a difference the code did not make.
"""

from __future__ import annotations

import difflib
import platform
from pathlib import Path

import pytest
import torch

from augforge.cli import main

GOLDEN = Path(__file__).parent / "data" / "golden-study"
STUDY = Path(__file__).parent / "data" / "golden-study.toml"


def _env() -> str:
    return f"torch {torch.__version__} {platform.machine()}"


def _rebuild_hint(out: Path) -> str:
    return (
        f"augforge bench --study {STUDY} --out OUT --no-progress --no-samples, "
        f"then copy OUT/per_image.csv and OUT/leaderboard.csv into {GOLDEN}"
    )


@pytest.mark.slow
def test_a_tiny_study_reproduces_the_kept_csvs_byte_for_byte(tmp_path, capsys):
    kept_env = (GOLDEN / "ENV").read_text().strip()
    if kept_env != _env():
        pytest.skip(f"kept CSVs come from {kept_env}; this is {_env()}")
    out = tmp_path / "study"
    assert main(["bench", "--study", str(STUDY), "--out", str(out), "--no-progress", "--no-samples"]) == 0
    capsys.readouterr()
    for name in ["per_image.csv", "leaderboard.csv"]:
        got, want = (out / name).read_text(), (GOLDEN / name).read_text()
        if got != want:
            diff = "".join(
                list(difflib.unified_diff(want.splitlines(True), got.splitlines(True), f"kept/{name}", f"now/{name}"))[
                    :40
                ]
            )
            pytest.fail(f"{name} changed (rebuild only if meant: {_rebuild_hint(out)}):\n{diff}")


def test_the_kept_csvs_hold_real_predictions():
    """The guard is only as sharp as its contents: all-zero Dice would not notice most changes."""
    rows = (GOLDEN / "per_image.csv").read_text().splitlines()
    header = rows[0].split(",")
    dice = [float(r.split(",")[header.index("dice")]) for r in rows[1:]]
    strategies = {r.split(",")[header.index("strategy")] for r in rows[1:]}
    assert {"none", "classical", "copy-paste", "dcgan+affine"} <= strategies
    assert sum(d > 0 for d in dice) >= len(dice) // 3 and len(set(dice)) > 10
