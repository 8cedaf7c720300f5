"""The harness: trials, failures that stay contained, determinism, the results store, the report and
the ``augforge bench`` / ``augforge report`` commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import commit_fake_trial

from augforge import Param, Strategy, hookimpl
from augforge.bench.executors import ExecutionContext, make_executor
from augforge.bench.ranking import LEADERBOARD_COLUMNS, build_leaderboard
from augforge.bench.report import write_report
from augforge.bench.store import PER_IMAGE_COLUMNS, ResultsStore
from augforge.bench.study import plan_study, run_study
from augforge.bench.trial import TrialEnv, execute_trial, run_trial, subsample_train
from augforge.cli import main
from augforge.config import apply_overrides, get_preset
from augforge.data.records import Dataset, Slice
from augforge.errors import DataError, UsageError
from augforge.plugins import get_registry

LABELS = ("LR2", "LR3", "LR4A", "LR4B")


def synthetic_dataset(n_train: int = 16, n_test: int = 8, size: int = 32, seed: int = 0) -> Dataset:
    """Discs in a noisy field, radius by class: a dataset the tiny U-Net learns in a second."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]

    def make(split: str, i: int) -> Slice:
        label = LABELS[i % 4]
        r = 2 + i % 4
        cy, cx = rng.integers(r + 2, size - r - 2, 2)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        hu = (-800.0 + 750.0 * mask + rng.normal(0, 30, mask.shape)).astype(np.float32)
        image = np.clip((hu + 1000) / 1000, 0, 1).astype(np.float32)
        return Slice(
            id=f"{split}-{i:03d}",
            hu=hu,
            lung_hu=hu,
            mask=mask,
            label=label,
            spacing_mm=0.8,
            patient=f"p{split}{i}",
            source="synthetic-test",
            image=image,
        )

    return Dataset(
        name="synthetic-test",
        train=[make("train", i) for i in range(n_train)],
        test=[make("test", i) for i in range(n_test)],
    )


def tiny_preset():
    return apply_overrides(get_preset("tiny"), {"train.epochs": "4"})


class RandomFlip:
    """A seeded online augmentation, to check that augmentation draws are reproducible."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, image, mask):
        return (image[:, ::-1].copy(), mask[:, ::-1].copy()) if self.rng.random() < 0.5 else (image, mask)


class FlipStrategy(Strategy):
    name = "test-flip"
    description = "Left-right flip with probability 0.5 (test plugin)."

    def build_transform(self, seed):
        return RandomFlip(seed)


class FailInPrepare(Strategy):
    name = "test-fail-prepare"
    description = "Raises in prepare (test plugin)."

    def prepare(self, train, ctx):
        raise RuntimeError("generator exploded in prepare")


class FailInTransform(Strategy):
    name = "test-fail-transform"
    description = "Raises in its transform (test plugin)."

    def build_transform(self, seed):
        def transform(image, mask):
            raise ValueError("transform exploded")

        return transform


class AddsRawSlices(Strategy):
    name = "test-adds-slices"
    description = "Adds copies of training slices without a preprocessed image (test plugin)."

    def prepare(self, train, ctx):
        extra = [
            Slice(
                id=f"syn-{s.id}",
                hu=s.hu,
                lung_hu=s.lung_hu,
                mask=s.mask,
                label=s.label,
                spacing_mm=s.spacing_mm,
                patient=s.patient,
                source="synthetic:test",
            )
            for s in train[:4]
        ]
        ctx.log(f"adding {len(extra)} slices")
        return list(train) + extra


#: Ways to break the strategy contract, each a transform or prepare that used to train and rank quietly.
BREAKS = {
    "row-short": lambda image, mask: (image[:-1], mask[:-1]),
    "soft-mask": lambda image, mask: (image, mask * np.float32(0.9)),
    "scaled-x255": lambda image, mask: (image * 255.0, mask),
    "nan-image": lambda image, mask: (np.full_like(image, np.nan), mask),
}


class BreaksContract(Strategy):
    name = "test-breaks"
    description = "Returns malformed output, as chosen by its parameter (test plugin)."
    params = (Param("how", str, "row-short", "which break", choices=(*BREAKS, "small-slices")),)

    def prepare(self, train, ctx):
        if self.config["how"] != "small-slices":
            return list(train)
        half = [
            Slice(
                id=f"small-{s.id}",
                hu=s.hu[::2, ::2],
                lung_hu=s.lung_hu[::2, ::2],
                mask=s.mask[::2, ::2],
                label=s.label,
                spacing_mm=s.spacing_mm,
                patient=s.patient,
                source="synthetic:test",
            )
            for s in train[:2]
        ]
        return list(train) + half

    def build_transform(self, seed):
        return BREAKS.get(self.config["how"])


class TestPlugin:
    @hookimpl
    def register_strategies(self, register):
        for cls in (FlipStrategy, FailInPrepare, FailInTransform, AddsRawSlices, BreaksContract):
            register(cls)


@pytest.fixture
def plugin(register_plugin):
    with register_plugin(TestPlugin(), "bench-test-plugin"):
        yield


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return synthetic_dataset()


def plan(dataset, strategies, seeds=(0,), fractions=(1.0,), **kw):
    return plan_study(
        list(strategies),
        preset=tiny_preset(),
        seeds=list(seeds),
        fractions=list(fractions),
        dataset_fingerprint=dataset.fingerprint,
        **kw,
    )


def run(dataset, trials, out: Path, force: bool = False):
    store = ResultsStore(out)
    env = TrialEnv(progress=False, log=lambda m: None)
    ctx = ExecutionContext(dataset=dataset, data_cfg=tiny_preset().data, allow_pickle=False, env=env)
    result = run_study(trials, store, make_executor("local", ctx), force=force, log=lambda m: None)
    return store, result


# -- trials -------------------------------------------------------------------------------------
def test_same_trial_twice_gives_identical_per_image_metrics(dataset, plugin):
    (trial,) = plan(dataset, ["test-flip"], baseline=False)
    env = TrialEnv(progress=False, log=lambda m: None)
    a = run_trial(trial, dataset, env)
    b = run_trial(trial, dataset, env)
    assert a.ok and b.ok
    strip = ("spacing_mm",)
    rows_a = [{k: v for k, v in r.items() if k not in strip} for r in a.rows]
    rows_b = [{k: v for k, v in r.items() if k not in strip} for r in b.rows]
    assert json.dumps(rows_a) == json.dumps(rows_b)  # as text, so that NaN (undefined HD95) equals NaN
    assert sum(r["pred_px"] for r in rows_a) > 0  # real predictions, not an all-empty tie
    assert a.record["training"]["final_loss"] == b.record["training"]["final_loss"]
    # A different seed changes the initial weights, the data order and the flips.
    (other,) = plan(dataset, ["test-flip"], seeds=[1], baseline=False)
    c = run_trial(other, dataset, env)
    assert [r["dice"] for r in c.rows] != [r["dice"] for r in rows_a]


def test_trial_key_covers_config_and_dataset(dataset, plugin):
    t0, t1 = plan(dataset, ["none"], seeds=[0, 1])
    assert t0.key != t1.key
    same = plan(dataset, ["none"], seeds=[0])[0]
    assert same.key == t0.key
    other_data = plan_study(["none"], preset=tiny_preset(), seeds=[0], fractions=[1.0], dataset_fingerprint="0" * 16)[0]
    assert other_data.key != t0.key
    changed = plan_study(
        ["none"],
        preset=apply_overrides(tiny_preset(), {"train.lr": "0.001"}),
        seeds=[0],
        fractions=[1.0],
        dataset_fingerprint=dataset.fingerprint,
    )[0]
    assert changed.key != t0.key
    # Settings that only shape one source's slices reach the key through that source's fingerprint, so
    # changing them on another source (or adding one in a later version) keeps the key.
    from augforge.config import DATASET_ONLY

    for name in DATASET_ONLY:
        current = getattr(tiny_preset().data, name)
        value = "ct" if name == "physics" else current + 1
        moved = plan_study(
            ["none"],
            preset=apply_overrides(tiny_preset(), {f"data.{name}": str(value)}),
            seeds=[0],
            fractions=[1.0],
            dataset_fingerprint=dataset.fingerprint,
        )[0]
        assert moved.key == t0.key
        assert name not in moved.config["settings"]["data"]


def test_slices_added_in_prepare_are_preprocessed(dataset, plugin):
    (trial,) = plan(dataset, ["test-adds-slices"], baseline=False)
    out = execute_trial(trial, dataset, TrialEnv(progress=False, log=lambda m: None))
    assert out.ok, out.record.get("error")
    assert out.record["training"]["n_total"] == len(dataset.train) + 4
    assert out.record["training"]["n_preprocessed"] == 4
    assert "adding 4 slices" in out.log_lines


def test_train_fraction_is_stratified_and_seeded(dataset):
    half = subsample_train(dataset.train, 0.5, seed=0)
    assert len(half) == 8
    assert sorted(s.label for s in half) == sorted(LABELS * 2)
    assert [s.id for s in half] == [s.id for s in subsample_train(dataset.train, 0.5, seed=0)]
    assert {s.id for s in half} != {s.id for s in subsample_train(dataset.train, 0.5, seed=1)}
    assert len(subsample_train(dataset.train, 0.01, seed=0)) == 4  # at least one per class
    # One slice per patient: drawing patients draws the same slices.
    assert [s.id for s in subsample_train(dataset.train, 0.5, 0, "patients")] == [s.id for s in half]


def test_a_fraction_of_patients_keeps_every_slice_of_each(dataset):
    import dataclasses

    # Four slices per patient (16 slices, 4 patients); a patient's class is its most severe slice's.
    grouped = [dataclasses.replace(s, patient=f"p{i // 4}") for i, s in enumerate(dataset.train)]
    for seed in range(3):
        part = subsample_train(grouped, 0.25, seed, "patients")
        patients = {s.patient for s in part}
        assert len(patients) == 1 and len(part) == 4  # one patient, all four slices
    drawn = {s.patient for seed in range(8) for s in subsample_train(grouped, 0.25, seed, "patients")}
    assert len(drawn) > 1  # the seed decides which patient
    with pytest.raises(ValueError, match="train.subsample must be one of slices, patients"):
        subsample_train(grouped, 0.5, 0, "nodules")


def test_the_subsample_unit_enters_a_trial_s_identity_only_when_it_changes_behaviour(dataset, plugin):
    (before,) = plan(dataset, ["none"])
    assert "subsample" not in before.config["settings"]["train"]  # the earlier behaviour: earlier keys
    patients = plan_study(
        ["none"],
        preset=apply_overrides(tiny_preset(), {"train.subsample": "patients"}),
        seeds=[0],
        fractions=[1.0],
        dataset_fingerprint=dataset.fingerprint,
    )[0]
    assert patients.key != before.key and patients.config["settings"]["train"]["subsample"] == "patients"


# -- failures stay contained --------------------------------------------------------------------
def test_a_failing_strategy_fails_only_its_own_trial(dataset, plugin, tmp_path):
    trials = plan(dataset, ["test-fail-prepare", "test-fail-transform"])
    store, result = run(dataset, trials, tmp_path)
    status = {r["strategy"]: r["status"] for r in store.records()}
    assert status == {"none": "ok", "test-fail-prepare": "failed", "test-fail-transform": "failed"}
    assert result.succeeded == 1 and result.failed == 2
    log = store.log_path.read_text()
    assert "generator exploded in prepare" in log and "transform exploded" in log
    assert "Traceback (most recent call last)" in log
    errors = {r["strategy"]: r["error"] for r in store.records("failed")}
    assert errors["test-fail-prepare"] == "RuntimeError: generator exploded in prepare"
    board = write_report(store, n_boot=200)
    assert [r.strategy for r in board.rows] == ["none"]
    report = store.report_path.read_text()
    assert "## Failed trials" in report and "test-fail-transform" in report
    # A failed trial is retried by the next run (it may have been fixed), a finished one is not.
    _, again = run(dataset, trials, tmp_path)
    assert again.skipped == 1 and len(again.outcomes) == 2


# -- the store ----------------------------------------------------------------------------------
def test_store_round_trip_and_resume(dataset, plugin, tmp_path):
    trials = plan(dataset, ["test-flip"], seeds=[0, 1])
    store, result = run(dataset, trials, tmp_path)
    assert result.succeeded == 4 and result.skipped == 0
    reloaded = ResultsStore(tmp_path)
    assert all(reloaded.finished(t.key) for t in trials)
    assert reloaded.rows(trials[0].key) == store.rows(trials[0].key)  # floats round-trip exactly
    stamps = {r["key"]: r["finished_at"] for r in reloaded.records()}
    _, again = run(dataset, trials, tmp_path)
    assert again.skipped == 4 and not again.outcomes
    assert {r["key"]: r["finished_at"] for r in ResultsStore(tmp_path).records()} == stamps
    _, forced = run(dataset, trials[:1], tmp_path, force=True)
    assert forced.skipped == 0 and len(forced.outcomes) == 1
    with (tmp_path / "per_image.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == PER_IMAGE_COLUMNS
        assert len(list(reader)) == 4 * len(dataset.test)
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 4
    rec = json.loads(lines[0])
    for field in ("config", "dataset", "metrics", "per_class", "timings_s", "memory", "versions", "device"):
        assert field in rec
    assert rec["dataset"]["fingerprint"] == dataset.fingerprint
    # The CPU's vector instruction set is part of what a trial ran on (it can change the rounding).
    assert rec["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and rec["cpu_capability"]


def _minimal_record(key: str, **more) -> dict:
    """The fields every trials.jsonl record must have (augforge.bench.store), for hand-made stores."""
    return {
        "key": key,
        "status": "ok",
        "strategy": "none",
        "seed": 0,
        "train_fraction": 1.0,
        "preset": "tiny",
        "config": {},
        "dataset": {"name": "fake", "fingerprint": "f" * 16},
        **more,
    }


def test_rows_without_a_committed_record_are_ignored(tmp_path):
    store = ResultsStore(tmp_path)
    row = {
        "trial": "k1",
        "strategy": "none",
        "seed": 0,
        "train_fraction": 1.0,
        "image": "a",
        "class": "LR2",
        "spacing_mm": 1.0,
        "dice": 0.5,
        "iou": 0.3,
        "precision": 0.5,
        "recall": 0.5,
        "hd95_mm": float("nan"),
        "true_px": 3,
        "pred_px": 0,
    }
    store.commit(_minimal_record("k1"), [row])
    # Simulate a kill between the two writes of a second trial: rows written, record not.
    text = (tmp_path / "per_image.csv").read_text()
    (tmp_path / "per_image.csv").write_text(text + text.splitlines()[1].replace("k1", "k2", 1) + "\n")
    again = ResultsStore(tmp_path)
    assert again.finished("k1") and not again.finished("k2") and again.rows("k2") == []
    assert np.isnan(again.rows("k1")[0]["hd95_mm"])


def test_damaged_trials_file_is_a_data_error(tmp_path):
    (tmp_path / "trials.jsonl").write_text(json.dumps(_minimal_record("a")) + "\nnot json\n")
    with pytest.raises(Exception, match=r"trials.jsonl:2: not a trial record"):
        ResultsStore(tmp_path)


# -- ranking ------------------------------------------------------------------------------------
def _fake_study(tmp_path: Path, gains: dict[str, float], seeds=(0, 1), n_images: int = 30) -> ResultsStore:
    """A store with hand-made per-image Dice: baseline ~U(0.3, 0.5), each strategy + its gain."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.5, size=(len(seeds), n_images))
    noise = rng.normal(0, 0.01, size=(len(gains), len(seeds), n_images))
    store = ResultsStore(tmp_path)
    for g, (name, gain) in enumerate(gains.items()):
        for si, seed in enumerate(seeds):
            shift = gain[si] if isinstance(gain, (list, tuple)) else gain  # a gain per seed, or one for all
            values = base[si] + shift + (0 if name == "none" else noise[g, si])
            commit_fake_trial(store, name, seed, values)
    return store


def test_report_says_when_trials_ran_on_different_cpu_vector_instructions(tmp_path):
    store = ResultsStore(tmp_path)
    values = np.linspace(0.3, 0.5, 12)
    commit_fake_trial(store, "none", 0, values, cpu_capability="AVX2")
    commit_fake_trial(store, "none", 1, values, cpu_capability="AVX512")
    write_report(store, n_boot=100)
    report = store.report_path.read_text()
    assert "(AVX2" in report  # the header names the first trial's
    assert "CPU vector instructions differ across trials (AVX2: 1, AVX512: 1)" in report
    commit_fake_trial(store, "none", 1, values, cpu_capability="AVX2")  # the same key: replaces the AVX512 one
    write_report(store, n_boot=100)
    assert "differ across trials" not in store.report_path.read_text()


def test_leaderboard_ranks_and_marks_significance(tmp_path):
    store = _fake_study(tmp_path, {"none": 0.0, "good": 0.1, "same": 0.0005, "bad": -0.05})
    board = write_report(store, n_boot=1000)
    by_name = {r.strategy: r for r in board.rows}
    order = [r.strategy for r in board.rows]
    assert order[0] == "good" and order[-1] == "bad" and set(order[1:3]) == {"same", "none"}
    assert [r.rank for r in board.rows] == [1, 2, 3, 4]
    assert by_name["good"].significant and by_name["bad"].significant
    assert by_name["same"].significant is False  # tiny noise-level difference: marked n.s.
    assert by_name["none"].significant is None
    assert by_name["good"].vs_baseline.delta == pytest.approx(0.1, abs=0.005)
    with store.leaderboard_path.open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == LEADERBOARD_COLUMNS
    assert rows[1][1] == "good" and rows[1][2] == "2"
    baseline_row = next(r for r in rows if r[1] == "none")
    assert baseline_row[6] == "0.000000" and baseline_row[7] == ""
    report = store.report_path.read_text()
    assert "**n.s.**" in report and "## Dice per Lung-RADS class" in report
    assert (store.figures_dir / "dice_by_strategy.png").stat().st_size > 1000
    assert (store.figures_dir / "dice_by_class.png").stat().st_size > 1000


def test_a_shift_whose_sign_depends_on_the_seed_is_not_significant(tmp_path):
    # Every image moves the same way on average over the three seeds (Wilcoxon: tiny p), but two of
    # the three training runs went the other way: another run could reverse it. Not a difference.
    noise_free = {"none": 0.0, "mixed": [-0.04, -0.04, +0.10], "steady": [0.03, 0.02, 0.04]}
    store = _fake_study(tmp_path, noise_free, seeds=(0, 1, 2), n_images=40)
    board = write_report(store, n_boot=2000)
    mixed = next(r for r in board.rows if r.strategy == "mixed")
    steady = next(r for r in board.rows if r.strategy == "steady")
    assert mixed.p_adjusted < 0.001 and mixed.p_boot_adjusted > 0.05
    assert mixed.vs_baseline.low < 0 < mixed.vs_baseline.high  # the interval of Δ covers zero ...
    assert mixed.significant is False and mixed.images_only  # ... so no difference is claimed
    assert mixed.p_value == mixed.p_boot_adjusted
    assert steady.significant and not steady.images_only
    report = store.report_path.read_text()
    mixed_line = next(line for line in report.splitlines() if line.startswith("| ") and "`mixed`" in line)
    assert "**n.s.** (images only)" in mixed_line
    # Each run's mean Dice, and the spread between the best and the worst run.
    runs = {r["seed"]: r["metrics"]["dice"] for r in store.records() if r["strategy"] == "mixed"}
    seed_line = next(line for line in report.split("## Dice per seed", 1)[1].splitlines() if "`mixed`" in line)
    cells = [c.strip() for c in seed_line.strip("|").split("|")]
    assert [float(c) for c in cells[1:4]] == pytest.approx([runs[0], runs[1], runs[2]], abs=0.0006)
    assert float(cells[4]) == pytest.approx(max(runs.values()) - min(runs.values()), abs=0.0006)
    assert float(cells[4]) > 0.1  # the +0.10 run against the -0.04 ones
    with store.leaderboard_path.open() as f:
        csv_p = {row[1]: row[7] for row in csv.reader(f)}
    assert float(csv_p["mixed"]) > 0.05 and float(csv_p["steady"]) < 0.05


def test_one_seed_never_calls_a_difference(tmp_path):
    # Every image gains 0.1 on the one training run: both tests give tiny p-values, but one run per
    # strategy cannot show that another run (or the same seed on other hardware) would agree.
    store = _fake_study(tmp_path, {"none": 0.0, "good": 0.1, "bad": -0.05}, seeds=(0,), n_images=40)
    board = write_report(store, n_boot=1000)
    by_name = {r.strategy: r for r in board.rows}
    for name in ("good", "bad"):
        row = by_name[name]
        assert row.p_adjusted < 0.001 and row.p_boot_adjusted < 0.01  # the images alone are clear ...
        assert row.one_seed and row.significant is False and not row.images_only  # ... no verdict
    assert by_name["good"].separated_from_next is False
    assert not by_name["none"].one_seed
    report = store.report_path.read_text()
    good_line = next(line for line in report.splitlines() if line.startswith("| ") and "`good`" in line)
    assert "**n.s.** (one seed)" in good_line and "significant" not in good_line
    # With a second seed that agrees, the same gain is called.
    two = _fake_study(tmp_path / "two", {"none": 0.0, "good": 0.1}, seeds=(0, 1), n_images=40)
    good = next(r for r in write_report(two, n_boot=1000).rows if r.strategy == "good")
    assert good.significant and not good.one_seed


def test_the_terminal_leaderboard_says_one_seed_calls_nothing(tmp_path):
    from rich.console import Console

    from augforge.cli.report import print_leaderboard

    store = _fake_study(tmp_path, {"none": 0.0, "good": 0.1}, seeds=(0,), n_images=20)
    console = Console(record=True, width=200)
    print_leaderboard(write_report(store, n_boot=200), console)
    text = console.export_text()
    assert "n.s. (one seed)" in text and "--seeds 3" in text


def test_leaderboard_separates_train_fractions(tmp_path):
    store = _fake_study(tmp_path, {"none": 0.0, "good": 0.1})
    for rec in list(store.records()):
        half = dict(rec, key=rec["key"] + "-half", train_fraction=0.5)
        rows = [dict(r, trial=half["key"], train_fraction=0.5, dice=r["dice"] - 0.1) for r in store.rows(rec["key"])]
        store.commit(half, rows)
    board = build_leaderboard(store, n_boot=200)
    assert [r.strategy for r in board.rows] == ["good @1", "none @1", "good @0.5", "none @0.5"]
    assert all(r.vs_baseline is not None for r in board.rows if not r.is_baseline)


def test_holm_is_applied_within_a_context(tmp_path):
    """Adding another context (a fraction, other data) leaves a context's adjusted p-values alone."""
    store = _fake_study(tmp_path, {"none": 0.0, "good": 0.02, "same": 0.002})
    before = {r.strategy: (r.p_adjusted, r.p_boot_adjusted) for r in build_leaderboard(store, n_boot=500).rows}
    for rec in list(store.records()):  # the same strategies again at another fraction
        half = dict(rec, key=rec["key"] + "-half", train_fraction=0.5)
        store.commit(half, [dict(r, trial=half["key"], train_fraction=0.5) for r in store.rows(rec["key"])])
    after = {r.strategy: (r.p_adjusted, r.p_boot_adjusted) for r in build_leaderboard(store, n_boot=500).rows}
    for name, ps in before.items():
        assert after[f"{name} @1"] == ps or name == "none"
    # Within the context, Holm does adjust: the adjusted p is at least the raw one.
    row = next(r for r in build_leaderboard(store, n_boot=500).rows if r.strategy == "same @1")
    assert row.p_adjusted >= row.vs_baseline.p_wilcoxon


# -- the command line ---------------------------------------------------------------------------
def test_bench_cli_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "study"
    rc = main(["bench", "--strategy", "none", "--preset", "tiny", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "seeds: 0" in captured.out and f"results: {out}" in captured.out
    for name in (
        "trials.jsonl",
        "per_image.csv",
        "leaderboard.csv",
        "report.md",
        "run.log",
        "figures/samples/none.png",
    ):
        assert (out / name).is_file(), name
    rec = json.loads((out / "trials.jsonl").read_text().splitlines()[0])
    assert rec["status"] == "ok" and rec["strategy"] == "none" and rec["preset"] == "tiny"
    assert rec["metrics"]["dice"] > 0.05, "the tiny preset should learn the phantom, not predict nothing"
    # `augforge report` rebuilds the derived files from the stored results.
    (out / "report.md").unlink()
    (out / "leaderboard.csv").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file()
    with (out / "leaderboard.csv").open() as f:
        assert tuple(next(csv.reader(f))) == LEADERBOARD_COLUMNS
    # Same command again: nothing recomputed.
    assert main(["bench", "--strategy", "none", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    assert "1 of 1 trials already finished" in capsys.readouterr().out


def test_bench_cli_all_failed_is_a_nonzero_exit(tmp_path, plugin, capsys):
    rc = main(
        [
            "bench",
            "--strategy",
            "test-fail-prepare",
            "--no-baseline",
            "--preset",
            "tiny",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 1
    assert "every trial failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--strategy", "none", "--set", "train.epoch=2"], "did you mean train.epochs?"),
        (["--strategy", "none", "--set", "nope.x=1"], "'nope' is neither a preset section"),
        (["--strategy", "none", "--train-fraction", "1.5"], "--train-fraction 1.5"),
        (["--strategy", "none", "--executor", "slurm"], "--executor 'slurm'"),
        (["--strategy", "none", "--set", "train.patch_size=30"], "train.patch_size: 30 is not a multiple of 4"),
        (
            ["--strategy", "none", "--set", "train.schedule=step"],
            "train.schedule: 'step' is not one of constant, cosine",
        ),
        ([], "give at least one --strategy"),
    ],
)
def test_bench_cli_usage_errors(tmp_path, capsys, argv, fragment):
    rc = main(["bench", "--preset", "tiny", "--out", str(tmp_path), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and fragment in err, err
    assert len(err.strip().splitlines()) == 1


def test_bench_cli_option_errors_exit_2(tmp_path, capsys):
    assert main(["bench", "--seeds", "0", "--strategy", "none", "--out", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert not (tmp_path / "trials.jsonl").exists()


def test_report_cli_needs_a_study_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no trials.jsonl here" in capsys.readouterr().err


def test_plan_rejects_parameters_for_strategies_outside_the_study(dataset, plugin):
    with pytest.raises(UsageError, match="strategy 'test-flip' is not part of this study"):
        plan(dataset, ["none"], strategy_params={"test-flip": {"p": 1}})
    trials = plan(dataset, ["test-flip", "test-flip", "none"], seeds=[0, 1], fractions=[1.0, 0.5])
    assert [(t.label, t.seed, t.train_fraction) for t in trials][:4] == [
        ("none", 0, 1.0),
        ("test-flip", 0, 1.0),
        ("none", 1, 1.0),
        ("test-flip", 1, 1.0),
    ]
    assert len(trials) == 8
    assert get_registry().get("test-flip") is FlipStrategy


# -- sample grids and the report's layout -------------------------------------------------------
def test_study_samples_one_grid_per_strategy_kept_across_resumes(dataset, plugin, tmp_path, monkeypatch):
    import matplotlib.image as mpimg

    from augforge.cli import preview as preview_mod

    trials = plan(dataset, ["test-flip", "test-fail-prepare"], seeds=[0, 1], fractions=[0.5, 1.0])
    store, _ = run(dataset, trials, tmp_path / "study")
    titles, logged = [], []
    draw = preview_mod.draw_preview
    monkeypatch.setattr(
        preview_mod, "draw_preview", lambda pairs, path, title: (titles.append(title), draw(pairs, path, title))
    )
    written = preview_mod.write_study_samples(
        trials, dataset, store.figures_dir, cache_dir=tmp_path / "gen", log=logged.append
    )
    # A strategy whose prepare raises gets no grid and a warning; the others get one each.
    assert set(written) == {"none", "test-flip"}
    assert any("no sample grid for test-fail-prepare" in m and "generator exploded" in m for m in logged)
    assert not list((store.figures_dir / "samples").glob("test-fail-prepare*"))
    for path in written.values():
        assert path.parent == store.figures_dir / "samples"
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 50 and image.std() > 0.01  # a picture, not a blank
    # Drawn from the largest train fraction's lowest seed: no "train fraction" note in the title.
    assert all("seed 0)" in t and "train fraction" not in t for t in titles), titles
    # A resumed study keeps the grids it has.
    stamp = written["test-flip"].stat().st_mtime_ns
    titles.clear()
    again = preview_mod.write_study_samples(
        trials, dataset, store.figures_dir, cache_dir=tmp_path / "gen", log=logged.append
    )
    assert again["test-flip"].stat().st_mtime_ns == stamp and titles == []

    # The report: one leaderboard table per train fraction, the wall time, and the sample grids.
    write_report(store, n_boot=200)
    report = store.report_path.read_text()
    assert "### Train fraction 1 (16 real training slices)" in report
    assert "### Train fraction 0.5 (8 real training slices)" in report
    assert report.index("### Train fraction 1 ") < report.index("### Train fraction 0.5 ")
    assert "- wall time: " in report and "s per trial on average" in report
    assert "## Samples" in report
    assert "![test-flip](figures/samples/test-flip.png)" in report and "![none](figures/samples/none.png)" in report


def test_sample_grid_of_a_smaller_fraction_uses_that_subset(dataset, plugin, tmp_path, monkeypatch):
    from augforge.cli import preview as preview_mod

    trials = plan(dataset, ["test-flip"], seeds=[1, 2], fractions=[0.5], baseline=False)
    seen = []
    real = preview_mod.preview_pairs

    def spy(strategy, ds, **kw):
        seen.append((strategy.label, len(ds.train), kw["seed"]))
        return real(strategy, ds, **kw)

    monkeypatch.setattr(preview_mod, "preview_pairs", spy)
    written = preview_mod.write_study_samples(
        trials, dataset, tmp_path / "figures", cache_dir=tmp_path / "gen", log=lambda m: None
    )
    assert seen == [("test-flip", 8, 1)] and list(written) == ["test-flip"]


def test_results_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from augforge.fileio import atomic_write_text

    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_text(tmp_path / "report.md", "x")
    # The mode open() would give (0666 less the umask), not mkstemp's private 0600: a study folder on
    # a shared disk must be readable by colleagues.
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o666 & ~umask


# -- one configuration per leaderboard row ------------------------------------------------------
def tiny_bench(strategy: str, out, *, epochs: int = 1, baseline: bool = False) -> list[str]:
    """``augforge bench`` argv for a one-seed tiny run of ``strategy`` into ``out``."""
    return [
        "bench",
        "--strategy",
        strategy,
        *([] if baseline else ["--no-baseline"]),
        "--preset",
        "tiny",
        "--set",
        f"train.epochs={epochs}",
        "--out",
        str(out),
        "--no-progress",
        "--no-samples",
    ]


def test_a_run_with_another_configuration_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "study"
    base = tiny_bench("flip", out, epochs=2, baseline=True)
    assert main(base) == 0
    trials = (out / "trials.jsonl").read_text()
    capsys.readouterr()
    # Another strategy parameter: the flip row would pool two configurations.
    assert main([*base, "--set", "flip.p=1"]) == 2
    err = capsys.readouterr().err
    assert "strategy 'flip'" in err and "strategy.params.p 0.5 vs 1.0" in err and "\n" not in err.strip()
    # Another preset setting: the baseline comparison would mix two trainings.
    assert main([*base, "--set", "train.epochs=3"]) == 2
    assert "settings.train.epochs 2 vs 3" in capsys.readouterr().err
    assert (out / "trials.jsonl").read_text() == trials  # nothing run, nothing lost
    # The same configuration again resumes.
    assert main(base) == 0 and "2 of 2 trials already finished" in capsys.readouterr().out
    # So does one whose description holds tuples (rotate's limit), which the store writes as lists.
    rot = tiny_bench("rotate", tmp_path / "rot")
    assert main(rot) == 0
    capsys.readouterr()
    assert main(rot) == 0 and "1 of 1 trials already finished" in capsys.readouterr().out


def test_a_folder_mixing_configurations_is_not_ranked(tmp_path):
    store = _fake_study(tmp_path, {"none": 0.0, "flip": 0.01})
    rec = dict(store.records()[-1], key="flip-other", config={"strategy_spec": {"params": {"p": 1.0}}})
    store.commit(rec, [dict(r, trial="flip-other") for r in store.rows(store.records()[-1]["key"])])
    with pytest.raises(DataError, match=r"strategy 'flip' .* different configurations \(strategy.params.p"):
        build_leaderboard(store, n_boot=100)
    old = dict(store.records()[0], key="none-old", versions={"augforge": "0.0.1"})
    store = _fake_study(tmp_path / "v", {"none": 0.0})
    store.commit(old, [dict(r, trial="none-old") for r in store.rows(store.records()[0]["key"])])
    with pytest.raises(DataError, match=r"augforge None vs '0.0.1'"):
        build_leaderboard(store, n_boot=100)


def test_ctrl_c_in_a_command_exits_130_with_a_message(tmp_path, monkeypatch, capsys):
    import augforge.bench.report

    _fake_study(tmp_path, {"none": 0.0})

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(augforge.bench.report, "write_report", interrupted)
    assert main(["report", str(tmp_path)]) == 130
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.lr=-1", "train.lr: -1.0 is not above the minimum 0 (a positive learning rate, e.g. 1e-3)"),
        ("train.lr=nan", "train.lr: nan is not a finite number"),
        ("model.depth=100", "model.depth: 100 is outside [1, 7]"),
        ("model.base_width=0", "model.base_width: 0 is below the minimum 1"),
        ("train.threshold=2", "train.threshold: 2.0 is outside (0, 1) (sigmoid >= threshold is tumour)"),
        ("train.threshold=0", "train.threshold: 0.0 is outside (0, 1)"),
        ("train.threads=-3", "train.threads: -3 is below the minimum 0"),
        ("train.momentum=1.5", "train.momentum: 1.5 is outside [0, 1)"),
        ("train.weight_decay=-0.1", "train.weight_decay: -0.1 is below the minimum 0"),
        ("train.eval_batch_size=0", "train.eval_batch_size: 0 is below the minimum 1"),
        ("data.input=lungs", "data.input: 'lungs' is not one of whole, lung (did you mean lung?)"),
        ("data.field_margin_mm=-2", "data.field_margin_mm: -2.0 is below the minimum 0"),
        ("data.window=abc", "data.window 'abc'"),
    ],
)
def test_bad_settings_are_refused_before_any_trial(tmp_path, capsys, setting, message):
    out = tmp_path / "never"
    rc = main(["bench", "--strategy", "none", "--preset", "tiny", "--set", setting, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()  # refused before the data load and before the results folder


# -- one writer per results folder ----------------------------------------------------------------
def test_a_second_run_on_a_folder_in_use_is_refused_and_loses_nothing(tmp_path, capsys):
    out = tmp_path / "study"
    base = tiny_bench("flip", out, baseline=True)
    assert main(base) == 0
    trials = (out / "trials.jsonl").read_text()
    capsys.readouterr()
    holder = ResultsStore(out)
    with holder.lock():  # another run holds the folder (flock: a second descriptor conflicts, even in-process)
        assert "pid " in (out / ".lock").read_text()
        assert main([*base, "--seeds", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert "is in use by another augforge run (pid " in err and "another --out" in err and "\n" not in err
        assert main(["report", str(out)]) == 2
        assert (out / "trials.jsonl").read_text() == trials
    # Released: the next run goes ahead and keeps what was there.
    assert main([*base, "--seeds", "2"]) == 0
    assert "2 of 4 trials already finished" in capsys.readouterr().out
    assert len(ResultsStore(out).records("ok")) == 4


# -- the strategy contract, checked at the boundary ------------------------------------------------
@pytest.mark.parametrize(
    ("how", "fragment"),
    [
        ("row-short", "transform returned image (31, 32) and mask (31, 32), expected both (32, 32)"),
        ("soft-mask", "transform returned a mask with values other than 0 and 1 (e.g. 0.9"),
        ("scaled-x255", "outside the network input's range [0, 1]"),
        ("nan-image", "transform returned an image with NaN or infinite values"),
        ("small-slices", "prepare returned training slice 'small-train-000' with image (16, 16)"),
    ],
)
def test_a_strategy_breaking_the_contract_fails_its_trial_naming_strategy_and_plugin(dataset, plugin, how, fragment):
    (trial,) = plan(dataset, ["test-breaks"], baseline=False, strategy_params={"test-breaks": {"how": how}})
    out = execute_trial(trial, dataset, TrialEnv(progress=False, log=lambda m: None))
    assert out.status == "failed"
    error = out.record["error"]
    assert "strategy 'test-breaks' (plugin 'bench-test-plugin')" in error and fragment in error, error


def test_finished_trials_of_a_changed_plugin_are_reused_with_a_warning(tmp_path, capsys, monkeypatch):
    from augforge import plugins

    out = tmp_path / "study"
    base = tiny_bench("flip", out)
    assert main(base) == 0
    (rec,) = ResultsStore(out).records("ok")
    assert rec["plugins"]["flip"]["plugin"] == "classical" and len(rec["plugins"]["flip"]["code"]) == 12
    capsys.readouterr()
    assert main(base) == 0
    assert "warning" not in capsys.readouterr().err  # nothing changed: no warning
    # The plugin's version moves: the user is told, and told how to recompute.
    info = plugins._plugin_info["classical"]
    monkeypatch.setattr(info, "version", "99.0")
    assert main(base) == 0
    captured = capsys.readouterr()
    assert "1 of 1 trials already finished" in captured.out
    assert f"strategy 'flip': 1 finished trial(s) in {out} ran with another build of its plugin" in captured.err
    assert "flip: version " in captured.err and "-> 99.0" in captured.err and "--force" in captured.err
    # Its code changes without a version bump: the same.
    monkeypatch.undo()
    monkeypatch.setattr(plugins, "_source_digest", lambda cls: "0123456789ab")
    assert main(base) == 0
    assert "-> 0123456789ab" in capsys.readouterr().err


# -- leftovers --------------------------------------------------------------------------------------
def test_a_killed_run_s_temporaries_are_removed_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "study"
    base = tiny_bench("flip", out)
    assert main(base) == 0
    (out / "figures" / "samples").mkdir(parents=True, exist_ok=True)
    left = [out / ".trials.jsonl.a1b2.tmp", out / "figures" / "samples" / ".flip.png.x9.tmp"]
    for p in left:
        p.write_bytes(b"half")
    keep = out / "notes.tmp"  # not hidden: not ours
    keep.write_text("mine")
    assert main(base) == 0
    assert not any(p.exists() for p in left) and keep.exists()


def test_a_folder_with_someone_else_s_report_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "paper"
    out.mkdir()
    (out / "report.md").write_text("# my own notes\n")
    rc = main(["bench", "--strategy", "flip", "--preset", "tiny", "--out", str(out), "--no-progress"])
    assert rc == 2 and "holds report.md but no trials.jsonl" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "# my own notes\n"


def test_a_run_interrupted_before_its_first_trial_resumes(tmp_path, capsys):
    # Ctrl-C after the floors and command.md were written, before any trial was committed (found by
    # benchmarks/campaign.py): the folder holds bench's files and its lock file, but no trials.jsonl.
    out = tmp_path / "study"
    base = tiny_bench("flip", out)
    assert main(base) == 0
    (out / "trials.jsonl").unlink()
    (out / "per_image.csv").unlink()
    (out / "report.md").unlink()
    assert (out / "floors.csv").exists() and (out / ".lock").exists()
    assert main(base) == 0
    assert len(ResultsStore(out).records("ok")) == 1


def test_stale_temporaries_go_and_fresh_ones_stay(tmp_path):
    import os
    import time

    from augforge.fileio import remove_stale_temporaries, temporary_dir

    old_dir = temporary_dir(tmp_path, "dataset")
    (old_dir / "hu.npy").write_bytes(b"x" * 100)
    old_file = tmp_path / "sub" / ".image-1.npy.k2.tmp"
    old_file.parent.mkdir()
    old_file.write_bytes(b"x")
    fresh = tmp_path / ".manifest.json.z.tmp"
    fresh.write_bytes(b"x")
    hour_ago = time.time() - 7200
    for p in (old_dir, old_file):
        os.utime(p, (hour_ago, hour_ago))
    assert remove_stale_temporaries(tmp_path, older_than_s=3600) == 2
    assert not old_dir.exists() and not old_file.exists() and fresh.exists()


def test_cache_folders_and_files_follow_the_umask(tmp_path, monkeypatch):
    import os
    import stat

    from augforge.data.processing import cache
    from augforge.fileio import temporary_dir

    umask = os.umask(0o022)
    os.umask(umask)
    made = temporary_dir(tmp_path, "x")
    assert stat.S_IMODE(made.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's private 0700
    monkeypatch.setenv("AUGFORGE_CACHE", str(tmp_path / "cache"))
    ds = synthetic_dataset(n_train=4, n_test=2)
    stack = cache.SliceStack(
        hu=np.stack([s.hu for s in ds.train + ds.test]),
        field=np.zeros((6, 32, 32), bool),
        mask=np.stack([s.mask for s in ds.train + ds.test]),
        records=[
            {
                "id": s.id,
                "label": s.label,
                "split": sp,
                "patient": s.patient,
                "source": "t",
                "spacing_mm": 0.8,
                "provenance": {},
            }
            for sp, group in (("train", ds.train), ("test", ds.test))
            for s in group
        ],
        meta={},
    )
    _, folder = cache.load_or_build("t", {"k": 2}, lambda: stack)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
    images = cache.images(folder, cache.load(folder), "", False, input="whole")
    assert images.shape == (6, 32, 32)
    for p in folder.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name


def test_cpu_bfloat16_is_a_setting_of_its_own_and_reproducible(dataset, plugin, tmp_path, monkeypatch):
    """train.cpu_amp stays out of earlier trials' identity, enters it when set, trains and scores in
    bfloat16 (other numbers than float32) and gives the same numbers for the same seed."""
    (before,) = plan(dataset, ["none"])
    assert "cpu_amp" not in before.config["settings"]["train"]
    preset = apply_overrides(tiny_preset(), {"train.cpu_amp": True})
    (bf16,) = plan_study(["none"], preset=preset, seeds=[0], fractions=[1.0], dataset_fingerprint=dataset.fingerprint)
    assert bf16.key != before.key and bf16.config["settings"]["train"]["cpu_amp"] is True
    lines: list[str] = []
    env = TrialEnv(device="cpu", cache_dir=tmp_path, progress=False, log=lines.append)
    runs = [run_trial(t, dataset, env) for t in (bf16, bf16, before)]
    assert "bfloat16 (train.cpu_amp)" in lines[0] and "bfloat16" not in lines[-1]
    dice = [[row["dice"] for row in r.rows] for r in runs]
    assert dice[0] == dice[1]  # same seed, same bfloat16 numbers
    losses = [r.record["training"]["final_loss"] for r in runs]
    assert losses[0] == losses[1] and losses[0] != losses[2]  # and not float32's
    # A CPU without bfloat16 instructions runs it, and the trial's log says it will be slow.
    monkeypatch.setattr("augforge.bench.trial.cpu_has_bf16", lambda: False)
    lines.clear()
    assert run_trial(bf16, dataset, env).record["training"]["final_loss"] == losses[0]
    assert any("no bfloat16 instructions" in line and "slower than float32" in line for line in lines)


def test_the_report_names_settings_other_than_the_preset_s():
    from augforge.bench.report import preset_overrides

    plain = {"preset": "tiny", "config": {"settings": get_preset("tiny").trial_settings()}}
    changed = apply_overrides(get_preset("tiny"), {"train.cpu_amp": "true", "train.threads": "2"}).trial_settings()
    other = {"preset": "tiny", "config": {"settings": changed}}
    assert preset_overrides([plain]) == {"tiny": {}}
    assert preset_overrides([plain, other]) == {"tiny": {"train.cpu_amp": ["true"], "train.threads": ["2"]}}
    assert preset_overrides([{"preset": "no-such-preset", "config": {"settings": {}}}]) == {}


@pytest.mark.parametrize(
    "executor, threads, n_trials, cpus, device, expected",
    [
        ("local", 1, 20, 2, "cpu", "--executor process runs 2 at once (same results)"),
        ("local", 1, 3, 16, "cpu", "--executor process runs 3 at once"),
        ("local", 0, 20, 2, "cpu", None),  # torch's default threads: every core already works
        ("local", 2, 20, 2, "cpu", None),  # one trial fills the CPU
        ("local", 1, 1, 2, "cpu", None),  # nothing to run beside it
        ("process", 1, 20, 2, "cpu", None),
        ("local", 1, 20, 2, "cuda", None),
    ],
)
def test_a_one_thread_study_on_the_local_executor_is_told_about_idle_cores(
    executor, threads, n_trials, cpus, device, expected
):
    from augforge.cli.bench import idle_cores_note

    note = idle_cores_note(executor, threads, n_trials, cpus, device)
    if expected is None:
        assert note is None
    else:
        assert note.startswith("note: each trial runs on train.threads=1") and expected in note


def test_the_idle_cores_note_is_given_for_trials_left_to_run_only(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    args = [*tiny_bench("none", tmp_path / "study", epochs=1, baseline=False), "--seeds", "2"]
    assert main(args) == 0
    assert "--executor process runs 2 at once (same results)" in capsys.readouterr().err
    assert main(args) == 0  # resumed: nothing left to run, nothing to say
    assert "note: each trial runs on" not in capsys.readouterr().err
