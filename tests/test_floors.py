"""Floors: predictors that learn nothing, scored beside the strategies in every leaderboard."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import commit_fake_trial

from augforge.bench.floors import FLOORS, floor_key, floor_masks, floor_rows, median_tumour_area
from augforge.bench.report import write_report
from augforge.bench.store import FLOOR_COLUMNS, ResultsStore
from augforge.data.records import Dataset, Slice

LABELS = ("LR2", "LR3", "LR4A", "LR4B")


def lung_slice(i: int, mask: np.ndarray | None = None, size: int = 48) -> Slice:
    """Body at 40 HU, a square lung at -850 HU, a big bright blob and a small one inside the lung."""
    hu = np.full((size, size), 40.0, np.float32)
    hu[:3], hu[-3:], hu[:, :3], hu[:, -3:] = -1000.0, -1000.0, -1000.0, -1000.0  # air around the body
    hu[8:40, 8:40] = -850.0
    hu[12:20, 12:20] = 30.0  # 64 px: the largest blob
    hu[30:33, 30:33] = 30.0  # 9 px
    if mask is None:
        mask = np.zeros((size, size), np.uint8)
        mask[12:20, 12:20] = 1
    return Slice(
        id=f"s{i:02d}",
        hu=hu,
        lung_hu=hu,
        mask=mask,
        label=LABELS[i % 4],
        spacing_mm=1.0,
        patient=f"p{i}",
        source="test",
    )


def test_floors_never_read_the_mask():
    a = lung_slice(0)
    moved = np.roll(a.mask, 11, axis=0)
    b = lung_slice(0, mask=moved)
    for name in FLOORS:
        assert np.array_equal(floor_masks(a, 30.0)[name], floor_masks(b, 30.0)[name])


def test_each_floor_predicts_what_it_says():
    s = lung_slice(0)
    preds = floor_masks(s, 50.0)
    assert not preds["empty"].any()
    disk = preds["centre-disk"]
    assert disk.sum() == pytest.approx(50, rel=0.25) and disk[23:25, 23:25].all()
    assert np.array_equal(preds["threshold-blob"], s.mask.astype(bool))  # the largest bright blob in the lung
    assert median_tumour_area([lung_slice(i) for i in range(3)]) == 64.0


def test_floor_rows_and_key():
    ds = Dataset(name="t", train=[lung_slice(i) for i in range(4)], test=[lung_slice(10 + i) for i in range(3)])
    rows = floor_rows(ds)
    assert {r["floor"] for r in rows} == set(FLOORS) and len(rows) == 3 * len(FLOORS)
    blob = [r for r in rows if r["floor"] == "threshold-blob"]
    assert all(r["dice"] == 1.0 for r in blob)  # here the tumour *is* the largest bright blob
    assert all(r["dice"] == 0.0 for r in rows if r["floor"] == "empty")
    assert floor_key("abc").startswith("abc/") and floor_key("abc") != floor_key("abd")


def _store(tmp_path: Path, strategies: dict[str, float], floor_dice: dict[str, float], n: int = 30) -> ResultsStore:
    """Hand-made per-image Dice: each strategy ~ its level, floors at constant levels."""
    rng = np.random.default_rng(1)
    store = ResultsStore(tmp_path)
    key = floor_key("f" * 16)
    floors = []
    for name, level in floor_dice.items():
        floors += [
            {
                "key": key,
                "floor": name,
                "image": f"img{i:03d}",
                "class": LABELS[i % 4],
                "spacing_mm": 1.0,
                "dice": level,
                "iou": level / 2,
                "precision": 0.5,
                "recall": 0.5,
                "hd95_mm": float("nan"),
                "true_px": 10,
                "pred_px": 10,
            }
            for i in range(n)
        ]
    store.set_floors(key, floors)
    for name, level in strategies.items():
        for seed in (0, 1):
            values = np.clip(level + rng.normal(0, 0.05, n), 0, 1)
            commit_fake_trial(
                store, name, seed, values, config={"settings": {"data": {"input": "lung", "field_margin_mm": 0.0}}}
            )
    return store


def test_leaderboard_shows_floors_and_marks_strategies_not_above_the_best(tmp_path):
    store = _store(tmp_path, {"none": 0.6, "weak": 0.41}, {"empty": 0.0, "centre-disk": 0.4, "threshold-blob": 0.2})
    board = write_report(store, n_boot=1000)
    floors = board.floors[board.contexts[0]]
    assert [f.name for f in floors] == list(FLOORS)
    assert board.best_floor(board.contexts[0]).name == "centre-disk"
    by = {r.strategy: r for r in board.rows}
    assert by["none"].beats_floor is True and by["none"].vs_floor.mean == pytest.approx(0.2, abs=0.03)
    assert by["weak"].beats_floor is False  # 0.41 vs 0.40: not shown to be above the floor
    with store.leaderboard_path.open() as f:
        rows = list(csv.reader(f))
    floor_rows_ = [r for r in rows[1:] if r[0] == "floor"]
    assert [r[1] for r in floor_rows_] == [f"floor:{n}" for n in FLOORS]
    assert float(floor_rows_[1][3]) == pytest.approx(0.4)
    assert {r[1]: r[-1] for r in rows[1:] if r[0] != "floor"} == {"none": "yes", "weak": "no"}
    report = store.report_path.read_text()
    assert "*centre-disk* (best)" in report and "**not above**" in report
    # Rebuilt from the folder alone (no data): the same floors.
    again = write_report(ResultsStore(tmp_path), n_boot=1000)
    assert again.best_floor(again.contexts[0]).dice.mean == pytest.approx(0.4)


def test_missing_or_mismatched_floors_are_a_note_not_a_crash(tmp_path):
    store = _store(tmp_path, {"none": 0.6}, {})
    board = write_report(store, n_boot=200)
    assert board.rows[0].beats_floor is None and "no floors stored" in board.notes[0]
    key = floor_key("f" * 16)
    store.set_floors(
        key,
        [
            {
                "key": key,
                "floor": "empty",
                "image": "other",
                "class": "LR2",
                "spacing_mm": 1.0,
                "dice": 0.0,
                "iou": 0.0,
                "precision": 0.0,
                "recall": 0.0,
                "hd95_mm": 0.0,
                "true_px": 1,
                "pred_px": 0,
            }
        ],
    )
    board = write_report(ResultsStore(tmp_path), n_boot=200)
    assert "other test images" in board.notes[0] and "Note:" in store.report_path.read_text()


def test_floors_csv_columns(tmp_path):
    store = _store(tmp_path, {"none": 0.5}, {"empty": 0.0})
    with store.floors_path.open() as f:
        assert tuple(next(csv.reader(f))) == FLOOR_COLUMNS


def test_floors_appear_once_per_dataset_in_the_metric_tables(tmp_path):
    store = _store(tmp_path, {"none": 0.6}, {"empty": 0.0, "centre-disk": 0.4, "threshold-blob": 0.2})
    for rec in list(store.records("ok")):  # the same dataset at a second train fraction
        key = rec["key"] + "-half"
        rows = [dict(r, trial=key, train_fraction=0.5) for r in store.rows(rec["key"])]
        store.commit(dict(rec, key=key, train_fraction=0.5), rows)
    write_report(store, n_boot=200)
    report = store.report_path.read_text()
    other = report.split("## Other metrics")[1].split("## Dice per Lung-RADS class")[0]
    per_class = report.split("## Dice per Lung-RADS class")[1].split("##")[0]
    assert other.count("*floor: centre-disk*") == 1 and per_class.count("*floor: centre-disk*") == 1
    assert report.count("### Train fraction") == 2  # the leaderboard still has one table per fraction
