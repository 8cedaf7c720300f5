"""A study: the grid of trials (strategies x train fractions x seeds), run through an executor into a
results store, skipping trials the store already holds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from augforge.bench.executors import Executor
from augforge.bench.store import ResultsStore
from augforge.bench.trial import Trial, TrialOutcome, make_trial
from augforge.config import SECTIONS, Preset
from augforge.errors import UsageError
from augforge.strategy import BASELINE

__all__ = ["StudyResult", "check_param_sections", "plan_study", "run_study"]


def _strategy_parts(spec: str) -> list[str]:
    return [p.strip() for p in spec.split("+")]


def check_param_sections(params: dict[str, dict[str, Any]], specs: Sequence[str], registry: Any) -> None:
    """Every ``--set SECTION.*`` that is not a preset section must name a strategy of the study."""
    used_parts = {p for s in specs for p in _strategy_parts(s)}
    for section in params:
        if section in used_parts:
            continue
        if section in registry.entries:
            raise UsageError(f"--set {section}.*: strategy {section!r} is not part of this study ({', '.join(specs)})")
        raise UsageError(
            f"--set {section}.*: {section!r} is neither a preset section "
            f"({', '.join(SECTIONS)}) nor a registered strategy (see `augforge strategies`)"
        )


def plan_study(
    strategies: Sequence[str],
    *,
    preset: Preset,
    seeds: Sequence[int],
    fractions: Sequence[float],
    dataset_fingerprint: str,
    strategy_params: dict[str, dict[str, Any]] | None = None,
    baseline: bool = True,
    registry: Any = None,
) -> list[Trial]:
    """Validate the strategies and their ``--set`` parameters and list the trials, seed by seed
    (the baseline first within a seed, so an interrupted study still has comparable pairs).

    Raises UsageError for an unknown strategy, a bad parameter, a parameter section that names no
    strategy of the study, a fraction outside (0, 1], or no seeds.
    """
    if registry is None:
        from augforge.plugins import get_registry

        registry = get_registry()
    params = strategy_params or {}
    if not seeds:
        raise UsageError("--seeds: run at least one seed")
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise UsageError(f"--train-fraction {f:g}: give a fraction in (0, 1], e.g. 0.5")
    specs: list[str] = []
    for s in ([BASELINE] if baseline else []) + [s.strip() for s in strategies]:
        if s and s not in specs:
            specs.append(s)
    if not specs:
        raise UsageError("no strategy to run: give --strategy NAME (or drop --no-baseline)")
    check_param_sections(params, specs, registry)
    built = {s: registry.create(s, params) for s in specs}
    return [
        make_trial(
            built[s],
            s,
            {p: params[p] for p in _strategy_parts(s) if p in params},
            preset,
            seed=seed,
            train_fraction=float(f),
            dataset_fingerprint=dataset_fingerprint,
        )
        for f in fractions
        for seed in seeds
        for s in specs
    ]


@dataclass
class StudyResult:
    planned: int
    skipped: int  # already finished in the store
    outcomes: list[TrialOutcome] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if not o.ok)

    @property
    def succeeded(self) -> int:
        """Trials of the study that are finished now: skipped ones plus those that ran ok."""
        return self.skipped + sum(1 for o in self.outcomes if o.ok)


def run_study(
    trials: Sequence[Trial],
    store: ResultsStore,
    executor: Executor,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> StudyResult:
    """Run the trials the store does not hold yet (all of them with ``force``); commit each outcome
    to the store as soon as it arrives, so a kill loses at most the trials still running."""
    todo = [t for t in trials if force or not store.finished(t.key)]
    result = StudyResult(planned=len(trials), skipped=len(trials) - len(todo))
    if result.skipped:
        log(
            f"{result.skipped} of {len(trials)} trials already finished in {store.root}; skipping them "
            "(--force recomputes)"
        )
    store.log(f"study: {len(todo)} trials to run, {result.skipped} already finished")

    def on_result(outcome: TrialOutcome) -> None:
        store.commit(outcome.record, outcome.rows, outcome.shifted_rows)
        for line in outcome.log_lines:
            store.log(line)
        result.outcomes.append(outcome)
        rec = outcome.record
        done = len(result.outcomes)
        if outcome.ok:
            log(
                f"[{done}/{len(todo)}] {rec['strategy']} seed {rec['seed']}: Dice {rec['metrics']['dice']:.4f} "
                f"in {rec['timings_s']['total']:.0f} s, peak RSS {rec['memory']['peak_rss_mb']:.0f} MiB"
            )
        else:
            log(
                f"[{done}/{len(todo)}] {rec['strategy']} seed {rec['seed']}: FAILED ({rec['error']}); "
                f"traceback in {store.log_path}"
            )

    executor.run(todo, on_result)
    return result
