"""Deterministic train/test split by patient for sources that do not say which slice goes where."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

#: Share of patients that go to the test split when the source gives no split.
TEST_FRACTION = 0.25


def test_patients(patients: Iterable[str], test_fraction: float = TEST_FRACTION) -> set[str]:
    """The patients of the test split: the first ``round(test_fraction * n)`` (at least one when there
    are two or more) in the order of a hash of their id, so the split is stable when patients are
    added or removed and does not depend on file order."""
    unique = sorted(set(patients), key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    if len(unique) < 2:
        return set()
    n = min(max(1, round(test_fraction * len(unique))), len(unique) - 1)
    return set(unique[:n])
