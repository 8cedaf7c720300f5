"""``augforge bench``: train the U-Net under each strategy, score it on the test split, rank the strategies.

Exit status: 0 when at least one trial of the study is finished (failed trials are reported in the
leaderboard, report.md and run.log); 1 when every trial failed; 2 for a usage error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from augforge.cli.options import AllowPickleOption, DataOption, PresetOption, SetOption
from augforge.config import parse_set_options, split_overrides
from augforge.errors import AugforgeError, UsageError
from augforge.fileio import atomic_write_text, remove_stale_temporaries

if TYPE_CHECKING:
    from augforge.bench.executors import ExecutionContext
    from augforge.bench.store import ResultsStore
    from augforge.bench.trial import Trial

#: More seeds than this is a typo, not a study (each seed is a training run).
MAX_SEEDS = 10_000


class AllTrialsFailed(AugforgeError):
    """Every trial of the study raised."""


def _command_record(device: str, torch_version: str) -> str:
    """The exact command and environment, for the report (markdown)."""
    import platform
    import shlex
    import sys

    from augforge import __version__

    argv = " ".join(shlex.quote(a) for a in ["augforge", *sys.argv[1:]])
    return (
        f"```console\n$ {argv}\n```\n\n- augforge {__version__}, torch {torch_version}, "
        f"Python {platform.python_version()}, {platform.platform()}\n- device: {device}, "
        f"{os.cpu_count()} CPU cores\n"
    )


def _check_compatible(store, trials, fingerprint: str) -> None:
    """Refuse, before any work, a run whose trials would share leaderboard rows (or a baseline) with
    finished trials of another configuration in the same folder (augforge.bench.ranking)."""
    from augforge import __version__
    from augforge.bench.ranking import check_one_configuration

    planned = [
        {
            "key": t.key,
            "strategy": t.name,
            "train_fraction": t.train_fraction,
            "preset": t.preset.name,
            "dataset": {"fingerprint": fingerprint},
            "config": t.config,
            "versions": {"augforge": __version__},
        }
        for t in trials
    ]
    try:
        check_one_configuration(store.records("ok") + planned, f"{store.root} (its finished trials and this run)")
    except AugforgeError as exc:
        raise UsageError(str(exc)) from None


def _changed_plugins(store, trials, registry) -> list[str]:
    """One line per strategy whose finished trials were run by another build of its plugin (another
    distribution, version or code): their results are reused, and the user should know."""
    from augforge.plugins import provenance_changes, strategy_provenance

    lines, seen = [], set()
    for t in trials:
        name = t.name
        rec = store.record(t.key)
        if name in seen or not store.finished(t.key) or not rec.get("plugins"):
            continue
        changes = provenance_changes(
            rec["plugins"], strategy_provenance(registry.create(t.strategy, t.strategy_params))
        )
        if changes:
            seen.add(name)
            n = sum(1 for u in trials if u.name == name and store.finished(u.key))
            lines.append(
                f"strategy {name!r}: {n} finished trial(s) in {store.root} ran with another build of "
                f"its plugin ({'; '.join(changes)}); their results are reused: add --force to "
                "recompute them"
            )
    return lines


def _check_out(folder: Path) -> None:
    """Refuse an unusable results folder before any data is loaded: an existing file, or a name the
    file system cannot hold."""
    for part in folder.parts:
        if len(part.encode()) > 255:
            raise UsageError(
                f"--out: the name {part[:24]}... is {len(part.encode())} bytes long; file names hold at most 255"
            )
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder}: is a file; give a folder for the results")
    # A bench run takes the folder's lock (creating .lock) before it writes anything: a folder with
    # neither trials.jsonl nor .lock was not written by one (an interrupted run's is resumable).
    if folder.is_dir() and not (folder / "trials.jsonl").exists() and not (folder / ".lock").exists():
        ours = ("report.md", "leaderboard.csv", "per_image.csv", "floors.csv", "command.md", "figures")
        found = [name for name in ours if (folder / name).exists()]
        if found:
            raise UsageError(
                f"--out {folder}: holds {found[0]} but no trials.jsonl, so not results of augforge "
                "bench; they would be overwritten: give another --out (or an empty folder)"
            )


def idle_cores_note(executor: str, threads: int, n_trials: int, cpus: int | None, device: str = "cpu") -> str | None:
    """A note when trials of a fixed thread count would run one after another on the local executor
    while the CPU holds several at once (the ``fast`` preset's one-thread trials on 2 cores)."""
    cpus = cpus or 1
    if executor != "local" or device != "cpu" or threads <= 0 or n_trials < 2 or cpus // threads < 2:
        return None
    at_once = min(cpus // threads, n_trials)
    return (
        f"note: each trial runs on train.threads={threads} and the local executor runs them one after another, "
        f"on {threads} of {cpus} CPU cores; --executor process runs {at_once} at once (same results)"
    )


def default_out(preset: str, source: str) -> Path:
    """``runs/<preset>-<data>``, the data part being the dataset name or the path's last component."""
    name = Path(source.rstrip("/\\")).name or "data"
    return Path("runs") / re.sub(r"[^A-Za-z0-9._-]+", "_", f"{preset}-{name}")


def bench_cmd(
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            "--strategy",
            "-s",
            metavar="NAME",
            help="Strategy to benchmark (repeatable); 'a+b' composes strategies; 'all' is every registered strategy.",
        ),
    ] = None,
    study: Annotated[
        Path | None,
        typer.Option(
            "--study",
            metavar="FILE",
            help="A study file (TOML) naming strategies, parameters, seeds, fractions (docs/studies.md).",
        ),
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option("--seeds", min=1, max=MAX_SEEDS, help="Seeds per strategy: trials use seeds 0..N-1 (default 1)."),
    ] = None,
    train_fraction: Annotated[
        list[float] | None,
        typer.Option(
            "--train-fraction",
            metavar="F",
            help="Share of the real training slices to use (repeatable; class-stratified, seeded). Default 1.",
        ),
    ] = None,
    preset: PresetOption = None,
    data: DataOption = None,
    allow_pickle: AllowPickleOption = False,
    set_: SetOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Study folder (default: runs/<preset>-<data>, or runs/<study> for --study)."),
    ] = None,
    executor: Annotated[
        str | None, typer.Option("--executor", help="local (in-process, default), process (local process pool) or ray.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Trials run at once by --executor process/ray (0: as many as the CPU cores hold at each trial's train.threads).",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            metavar="ADDR",
            help="Ray head to use with --executor ray (HOST:PORT, ray://HOST:10001 or auto); "
            "default $RAY_ADDRESS, else a local Ray.",
        ),
    ] = None,
    no_baseline: Annotated[
        bool, typer.Option("--no-baseline", help="Do not add the baseline strategy 'none'.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Recompute trials already in the study folder.")] = False,
    no_samples: Annotated[
        bool, typer.Option("--no-samples", help="Do not draw the report's sample grid per strategy.")
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
) -> None:
    """Train and score the U-Net under each strategy (plus the baseline 'none') and rank them by Dice.

    Re-running the same command resumes: finished trials are read from the study folder, not recomputed.
    """
    import torch

    from augforge.bench.executors import ExecutionContext, executor_class
    from augforge.bench.store import ResultsStore
    from augforge.bench.studyfile import flags_study, load_study, plan_trials
    from augforge.bench.trial import TrialEnv
    from augforge.data.sources import load_dataset
    from augforge.plugins import get_registry

    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    progress = not no_progress

    def log(msg: str) -> None:
        console.print(msg, markup=False)

    # 1. Configuration: preset, overrides, strategies (all validated before any data is loaded).
    strategy, set_ = strategy or [], set_ or []
    registry = get_registry()
    for problem in registry.errors:
        err.print(f"warning: {problem}", markup=False)
    preset_over, strategy_params = split_overrides(parse_set_options(set_))
    options: dict = {}
    if study is not None:
        if strategy or train_fraction or no_baseline or strategy_params:
            raise UsageError(
                "--study FILE names the strategies, their parameters, fractions and baseline; "
                "drop --strategy/--train-fraction/--no-baseline and strategy --set items, "
                "or drop --study"
            )
        spec = load_study(study).override(
            data=data or None,
            allow_pickle=allow_pickle or None,
            seeds=seeds,
            preset=preset,
            executor=executor,
            set=preset_over or None,
            out=str(out) if out is not None else None,
        )
    else:
        if not strategy:
            raise UsageError(
                "give at least one --strategy NAME (see `augforge strategies`), or --study FILE; "
                "`--strategy none` runs the baseline alone"
            )
        spec = flags_study(
            strategy,
            registry=registry,
            strategy_params=strategy_params,
            train_fractions=train_fraction or [],
            baseline=not no_baseline,
            seeds=seeds,
            preset=preset,
            data=data or None,
            executor=executor,
            overrides=preset_over,
        )
    # Flags and study files alike: check everything, then plan the trials, before any data are loaded.
    spec.validate(registry)
    cfg = spec.build_preset()
    seed_list = list(range(spec.seeds))
    planned = plan_trials(spec, cfg, seeds=seed_list, dataset_fingerprint="", registry=registry)
    executor_name, allow_pickle = spec.executor, allow_pickle or spec.allow_pickle
    options.update(spec.executor_settings)
    n_workers = workers if workers is not None else spec.workers
    if study is not None:
        folder = Path(spec.out) if spec.out else Path("runs") / spec.name
    else:
        folder = out if out is not None else default_out(cfg.name, cfg.data.source)
    _check_out(folder)
    if ray_address is not None:
        if executor_name != "ray":
            raise UsageError("--ray-address needs --executor ray")
        options["ray_address"] = ray_address
    executor_class(executor_name)  # an unknown executor, or Ray missing: say so before loading data
    device = "cuda" if torch.cuda.is_available() else "cpu"
    log(f"augforge bench: preset {cfg.name}, data {cfg.data.source}, device {device}, executor {executor_name}")
    log(f"seeds: {', '.join(map(str, seed_list))}")
    log(f"results: {folder}")

    # 2. Data, then the trial grid keyed by the dataset's fingerprint.
    dataset = load_dataset(cfg.data, allow_pickle=allow_pickle, progress=progress)
    log(
        f"dataset {dataset.name} ({dataset.fingerprint}): {len(dataset.train)} train, {len(dataset.test)} test, "
        f"{len(dataset.healthy)} healthy slices"
    )
    trials = [dataclasses.replace(t, dataset_fingerprint=dataset.fingerprint) for t in planned]

    intensity = str(dataset.meta.get("intensity", "HU"))
    if intensity != "HU":
        specs = {(t.strategy, json.dumps(t.strategy_params, sort_keys=True, default=str)): t for t in trials}
        needs = sorted({t.name for t in specs.values() if registry.create(t.strategy, t.strategy_params).needs_hu})
        if needs:
            raise UsageError(
                f"{', '.join(needs)}: needs Hounsfield units, and {cfg.data.source} has {intensity} "
                "intensities; leave these strategies out on this data (dcgan and copy-paste "
                "work on it)"
            )

    # 3. Run what is not finished yet; every outcome is committed as it arrives. The folder is locked
    #    for the run: a second run on it is refused, and what the first commits is never lost.
    store = ResultsStore(folder)
    _check_compatible(store, trials, dataset.fingerprint)
    with store.lock():
        remove_stale_temporaries(store.root, older_than_s=0)  # a killed run's; no other writer holds the lock
        store.load()  # what another run committed before this one took the lock
        _check_compatible(store, trials, dataset.fingerprint)
        if not force:
            for line in _changed_plugins(store, trials, registry):
                err.print(f"warning: {line}", markup=False)
        pending = sum(1 for t in trials if force or not store.finished(t.key))
        note = idle_cores_note(executor_name, cfg.train.threads, pending, os.cpu_count(), device)
        if note:  # after every check: an error stays one line
            err.print(note, markup=False)
        env = TrialEnv(device=device, progress=progress, log=log)
        context = ExecutionContext(
            dataset=dataset, data_cfg=cfg.data, allow_pickle=allow_pickle, env=env, workers=n_workers, options=options
        )
        _run_and_report(store, trials, executor_name, context, force=force, no_samples=no_samples, console=console)


def _run_and_report(
    store: ResultsStore,
    trials: list[Trial],
    executor_name: str,
    context: ExecutionContext,
    *,
    force: bool,
    no_samples: bool,
    console: Console,
) -> None:
    """Steps 3 and 4 of ``bench``, under the folder's lock: run on ``executor_name`` in ``context``."""
    import torch

    from augforge.bench.executors import make_executor
    from augforge.bench.floors import floor_key, floor_rows
    from augforge.bench.report import write_report
    from augforge.bench.study import run_study
    from augforge.cli.report import print_leaderboard

    dataset, env, log, progress = context.dataset, context.env, context.env.log, context.env.progress
    fkey = floor_key(dataset.fingerprint)
    if force or not store.floors(fkey):  # predictors that learn nothing, on the same test images
        store.set_floors(fkey, floor_rows(dataset))
    atomic_write_text(store.command_path, _command_record(env.device, torch.__version__))
    result = run_study(trials, store, make_executor(executor_name, context), force=force, log=log)

    # 4. A sample grid per strategy (kept across resumes), then ranking and report over the folder.
    if not no_samples:
        from augforge.cli.preview import write_study_samples

        write_study_samples(trials, dataset, store.figures_dir, cache_dir=env.cache_dir, log=log, progress=progress)
    board = write_report(store)
    print_leaderboard(board, console)
    log(f"report: {store.report_path}")
    if result.succeeded == 0:
        raise AllTrialsFailed(f"every trial failed ({result.failed}); tracebacks in {store.log_path}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
