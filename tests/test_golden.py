"""The same seeds give the same bytes: a tiny study's per-image and leaderboard CSVs are kept in
tests/data/golden-study/<CPU capability>/, and rerunning the study must reproduce them exactly.

This guards refactors of the core (planning, validation, seeding, the plugins' imports): any change
that moves one trial's result, however slightly, fails here. A change *meant* to move results
rebuilds the kept CSVs with the command in ``_rebuild_hint`` and says why in its commit.

Each kept set was produced with the torch build, machine type and CPU vector instructions written in
its ``ENV`` (torch picks AVX2 or AVX512 kernels at run time, and they round a convolution's sums
differently, so the same seed trains slightly different weights). The test compares against the set
whose ``ENV`` matches this machine, and is skipped with that reason where none does, rather than
reporting a difference the code did not make. On an AVX512 machine the AVX2 set is checked with
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL"``
(docs/studies.md).
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
    return f"torch {torch.__version__} {platform.machine()} {torch.backends.cpu.get_cpu_capability()}"


def _kept_sets() -> dict[str, Path]:
    return {(d / "ENV").read_text().strip(): d for d in sorted(GOLDEN.iterdir()) if (d / "ENV").is_file()}


def _rebuild_hint(out: Path) -> str:
    return (
        f"augforge bench --study {STUDY} --out OUT --no-progress --no-samples, "
        f"then copy OUT/per_image.csv and OUT/leaderboard.csv into {GOLDEN}/<CPU capability>/"
    )


@pytest.mark.slow
def test_a_tiny_study_reproduces_the_kept_csvs_byte_for_byte(tmp_path, capsys):
    kept = _kept_sets().get(_env())
    if kept is None:
        pytest.skip(f"kept CSVs come from {sorted(_kept_sets())}; this is {_env()}")
    out = tmp_path / "study"
    assert main(["bench", "--study", str(STUDY), "--out", str(out), "--no-progress", "--no-samples"]) == 0
    capsys.readouterr()
    for name in ["per_image.csv", "leaderboard.csv"]:
        got, want = (out / name).read_text(), (kept / name).read_text()
        if got != want:
            diff = "".join(
                list(difflib.unified_diff(want.splitlines(True), got.splitlines(True), f"kept/{name}", f"now/{name}"))[
                    :40
                ]
            )
            pytest.fail(f"{name} changed (rebuild only if meant: {_rebuild_hint(out)}):\n{diff}")


@pytest.mark.parametrize("env", sorted(_kept_sets()))
def test_the_kept_csvs_hold_real_predictions(env):
    """The guard is only as sharp as its contents: all-zero Dice would not notice most changes."""
    kept = _kept_sets()[env]
    rows = (kept / "per_image.csv").read_text().splitlines()
    header = rows[0].split(",")
    dice = [float(r.split(",")[header.index("dice")]) for r in rows[1:]]
    strategies = {r.split(",")[header.index("strategy")] for r in rows[1:]}
    assert {"none", "classical", "copy-paste", "dcgan+affine"} <= strategies
    assert sum(d > 0 for d in dice) >= len(dice) // 3 and len(set(dice)) > 10


def test_every_kept_set_covers_the_same_study():
    """Sets differ only in rounding: the same trials and images, in the same order."""
    sets = list(_kept_sets().values())
    assert sets, "no kept set found"

    def keys(d: Path) -> list[str]:
        rows = (d / "per_image.csv").read_text().splitlines()
        header = rows[0].split(",")
        cols = [header.index(c) for c in ("strategy", "seed", "image")]
        return [rows[0]] + [",".join(r.split(",")[i] for i in cols) for r in rows[1:]]

    for d in sets[1:]:
        assert keys(d) == keys(sets[0]), f"{d.name} and {sets[0].name} hold different trials"
