"""The benchmark harness: trials, executors, the results store, statistics, ranking and the report."""

from augforge.bench.executors import EXECUTORS, ExecutionContext, Executor, make_executor, register_executor
from augforge.bench.ranking import Leaderboard, LeaderboardRow, build_leaderboard
from augforge.bench.report import write_report
from augforge.bench.store import ResultsStore
from augforge.bench.study import StudyResult, plan_study, run_study
from augforge.bench.trial import Trial, TrialEnv, TrialOutcome, execute_trial, run_trial

__all__ = [
    "EXECUTORS",
    "ExecutionContext",
    "Executor",
    "Leaderboard",
    "LeaderboardRow",
    "ResultsStore",
    "StudyResult",
    "Trial",
    "TrialEnv",
    "TrialOutcome",
    "build_leaderboard",
    "execute_trial",
    "make_executor",
    "plan_study",
    "register_executor",
    "run_study",
    "run_trial",
    "write_report",
]
