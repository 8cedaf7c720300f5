"""benchmarks/compare_studies.py: two runs of one design, verdict by verdict."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_studies", ROOT / "benchmarks" / "compare_studies.py")
compare_studies = importlib.util.module_from_spec(_spec)
sys.modules["compare_studies"] = compare_studies
_spec.loader.exec_module(compare_studies)


def entry(dice, delta=None, verdict=None, held=None, held_delta=None, held_verdict=None):
    out = {"dice": dice, "seeds": [0, 1, 2]}
    if delta is not None:
        out.update(delta=delta, verdict=verdict)
    if held is not None:
        out["held_out_dice"] = held
    if held_delta is not None:
        out.update(held_out_delta=held_delta, held_out_verdict=held_verdict)
    return out


def test_verdicts_are_tallied_as_same_moved_or_turned_around():
    a = {
        ("none", 1.0): entry(0.50, held=0.40),
        ("flip", 1.0): entry(0.51, 0.01, "n.s.", 0.41, 0.01, "n.s."),
        ("dcgan", 1.0): entry(0.45, -0.05, "-", 0.30, -0.10, "-"),
        ("classical", 0.1): entry(0.43, 0.03, "n.s.", 0.36, 0.07, "+"),
    }
    b = {
        ("none", 1.0): entry(0.47, held=0.40),
        ("flip", 1.0): entry(0.48, 0.01, "n.s.", 0.44, 0.04, "+"),  # moved: n.s. -> +
        ("dcgan", 1.0): entry(0.43, -0.04, "-", 0.31, 0.02, "+"),  # held-out: - -> +, turned around
        ("classical", 0.1): entry(0.44, 0.05, "n.s.", 0.37, 0.08, "+"),
    }
    result = compare_studies.compare(a, b)
    assert (result["verdicts"], result["same"], result["moved"], result["turned_around"]) == (6, 4, 1, 1)
    # rows in the order of the tables: largest fraction first, then by name
    assert result["changes"] == ["dcgan @1 held-out: - -> + (turned around)", "flip @1 held-out: n.s. -> +"]
    assert result["median_abs_dice_move"] == pytest.approx(0.025)
    text = compare_studies.markdown(result, ("quick", "fast"))
    assert "| `dcgan @1` | 0.450, -0.050 (-) | 0.430, -0.040 (-) | 0.300, -0.100 (-) | 0.310, +0.020 (+) |" in text
    assert "4 of 6 verdicts the same; 1 moved between significant and not (same sign); 1 turned around" in text


def test_runs_of_other_designs_are_refused():
    a = {("none", 1.0): entry(0.5), ("flip", 1.0): entry(0.5, 0.0, "n.s.")}
    b = {("none", 1.0): entry(0.5), ("rotate", 1.0): entry(0.5, 0.0, "n.s.")}
    with pytest.raises(SystemExit, match="other strategies or fractions"):
        compare_studies.compare(a, b)


def test_a_folder_without_trials_is_a_one_line_error(tmp_path, capsys):
    assert compare_studies.main([str(tmp_path), str(tmp_path)]) == 2
    assert "holds no trials.jsonl" in capsys.readouterr().err


def test_the_published_comparison_of_the_default_study_with_quicks_budget():
    studies = ROOT / "benchmarks" / "studies"
    quick = compare_studies.study_verdicts(studies / "quick-run", n_boot=10_000)
    fast = compare_studies.study_verdicts(studies / "default-run", n_boot=10_000)
    result = compare_studies.compare(quick, fast)
    # docs/results.md, "The default study in 27 minutes": 18 of 26 the same, 8 moved, none turned around
    assert (result["verdicts"], result["same"], result["moved"], result["turned_around"]) == (26, 18, 8, 0)
    assert "classical @0.1 held-out: + -> n.s." in result["changes"]
