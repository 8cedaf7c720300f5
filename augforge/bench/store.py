"""The results store: one folder per study, safe to kill at any moment and to resume.

Files (all in the study folder):

``trials.jsonl``    one JSON record per finished trial (ok or failed): config, dataset fingerprint,
                    metric summary, per-class Dice, timings, memory, versions, device.
``per_image.csv``   one row per (trial, test image): class and every metric.
``per_image_shifted.csv``  the same for the test slices acquired at a held-out scanner site, on
                    data that have them (lidc-phantom with ``data.physics = "ct"``).
``floors.csv``      one row per (floor, test image) of the predictors that learn nothing
                    (:mod:`augforge.bench.floors`), per dataset and input setting (``key``).
``run.log``         what happened, with the traceback of every failed trial.
``leaderboard.csv``, ``report.md``, ``figures/`` -- derived, rebuilt by :mod:`augforge.bench.report`.

Every file is replaced atomically (written to a temporary file in the same folder, flushed to disk,
then renamed over the old one), so a reader or a killed process never sees half a file. A trial is
committed by its line in ``trials.jsonl``, written after its per-image rows; rows of a trial without
a record (a kill between the two writes) are ignored and overwritten when the trial runs again.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from augforge.clock import utc_stamp
from augforge.errors import DataError, UsageError
from augforge.fileio import atomic_write_text

__all__ = ["FLOOR_COLUMNS", "PER_IMAGE_COLUMNS", "ResultsStore"]

#: An image's columns in both tables: which image, then its metrics (augforge.metrics.METRIC_NAMES).
_IMAGE_COLUMNS = ("image", "class", "spacing_mm", "dice", "iou", "precision", "recall", "hd95_mm", "true_px", "pred_px")
PER_IMAGE_COLUMNS: tuple[str, ...] = ("trial", "strategy", "seed", "train_fraction", *_IMAGE_COLUMNS)
FLOOR_COLUMNS: tuple[str, ...] = ("key", "floor", *_IMAGE_COLUMNS)
_INT_COLUMNS = {"seed", "true_px", "pred_px"}
_FLOAT_COLUMNS = {"train_fraction", "spacing_mm", "dice", "iou", "precision", "recall", "hd95_mm"}


def json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _clean_nan(value: Any) -> Any:
    """JSON has no NaN: undefined numbers are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_nan(v) for v in value]
    return value


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)  # repr round-trips exactly
    return str(value)


def _csv_text(columns: tuple[str, ...], groups: Iterable[Iterable[dict[str, Any]]]) -> str:
    """A CSV file's text: the header, then every row of every group, cells as :func:`_format_cell`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for rows in groups:
        for r in rows:
            writer.writerow([_format_cell(r.get(c)) for c in columns])
    return buf.getvalue()


#: Fields every trials.jsonl record has, and their JSON types; finished ("ok") ones have more.
_RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "status": (str,),
    "strategy": (str,),
    "seed": (int,),
    "train_fraction": (int, float),
    "preset": (str,),
    "config": (dict,),
}


def _record_problem(rec: Any) -> str | None:
    """What makes ``rec`` unusable as a trial record, or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    for name, types in _RECORD_FIELDS.items():
        if name not in rec:
            return f"no {name!r}"
        if not isinstance(rec[name], types) or isinstance(rec[name], bool):
            return f"{name!r} is {type(rec[name]).__name__}"
    if rec["status"] == "ok":
        ds = rec.get("dataset")
        if not isinstance(ds, dict) or not isinstance(ds.get("fingerprint"), str):
            return "no dataset fingerprint"
    return None


def _parse_row(raw: dict[str, str]) -> dict[str, Any]:
    if None in raw.values() or None in raw:
        raise ValueError("row of a different length than the header")
    row: dict[str, Any] = dict(raw)
    for k in _INT_COLUMNS & raw.keys():
        row[k] = int(raw[k])
    for k in _FLOAT_COLUMNS & raw.keys():
        row[k] = float(raw[k]) if raw[k] != "" else float("nan")
    return row


class ResultsStore:
    """The results of one study folder, loaded in memory; every change is written through atomically."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.trials_path = self.root / "trials.jsonl"
        self.per_image_path = self.root / "per_image.csv"
        self.per_image_shifted_path = self.root / "per_image_shifted.csv"
        self.floors_path = self.root / "floors.csv"
        self.log_path = self.root / "run.log"
        self.leaderboard_path = self.root / "leaderboard.csv"
        self.report_path = self.root / "report.md"
        self.figures_dir = self.root / "figures"
        self.command_path = self.root / "command.md"  # the command line and environment of the last run
        self._records: dict[str, dict[str, Any]] = {}
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self._shifted: dict[str, list[dict[str, Any]]] = {}
        self._floors: dict[str, list[dict[str, Any]]] = {}
        self.load()

    # -- reading -----------------------------------------------------------------------------
    def load(self) -> None:
        """(Re)read the folder. A malformed record or row is a DataError naming the file and line."""
        self._records.clear()
        self._rows.clear()
        self._shifted.clear()
        self._floors.clear()
        for row in self._read_csv(self.floors_path, FLOOR_COLUMNS):
            self._floors.setdefault(row["key"], []).append(row)
        if self.trials_path.exists():
            try:
                text = self.trials_path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    f"{self.trials_path}: not UTF-8 text, so not written by augforge; move it away "
                    "and rerun into a fresh --out folder"
                ) from None
            for n, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    rec = None
                problem = _record_problem(rec)
                if problem:
                    raise DataError(
                        f"{self.trials_path}:{n}: not a trial record ({problem}); move the file "
                        "away or rerun into a fresh --out folder"
                    )
                self._records[rec["key"]] = rec
        for row in self._read_csv(
            self.per_image_path, PER_IMAGE_COLUMNS, "rerun with --force into a fresh --out folder"
        ):
            self._rows.setdefault(row["trial"], []).append(row)
        for row in self._read_csv(
            self.per_image_shifted_path, PER_IMAGE_COLUMNS, "rerun with --force into a fresh --out folder"
        ):
            self._shifted.setdefault(row["trial"], []).append(row)
        # Rows without a committed ok record belong to an interrupted or failed run: not results.
        for rows in (self._rows, self._shifted):
            for key in [k for k in rows if self._records.get(k, {}).get("status") != "ok"]:
                del rows[key]

    def _read_csv(
        self, path: Path, columns: tuple[str, ...], remedy: str = "delete the file, `augforge bench` writes it again"
    ) -> list[dict[str, Any]]:
        """Rows of one of the folder's CSV files, parsed; a DataError naming the file (and line) and
        ``remedy`` when it is not what augforge wrote."""
        if not path.exists():
            return []
        out = []
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = set(columns) - set(reader.fieldnames or ())
                if missing:
                    raise DataError(f"{path}: missing columns {', '.join(sorted(missing))}; {remedy}")
                for n, raw in enumerate(reader, start=2):
                    try:
                        out.append(_parse_row(raw))
                    except ValueError as exc:
                        raise DataError(f"{path}:{n}: unreadable row ({exc}); {remedy}") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: not a CSV file augforge wrote ({type(exc).__name__}); {remedy}") from None
        return out

    def floors(self, key: str) -> list[dict[str, Any]]:
        """Per-image rows of the floors stored for ``key`` (see :func:`augforge.bench.floors.floor_key`)."""
        return self._floors.get(key, [])

    def set_floors(self, key: str, rows: Iterable[dict[str, Any]]) -> None:
        """Store (or replace) the floors of one dataset and input setting; floors.csv is rewritten atomically."""
        self._floors[key] = list(rows)
        atomic_write_text(self.floors_path, _csv_text(FLOOR_COLUMNS, self._floors.values()))

    def records(self, status: str | None = None) -> list[dict[str, Any]]:
        """Trial records in the order they were first committed, optionally only one status."""
        return [r for r in self._records.values() if status is None or r.get("status") == status]

    def record(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def rows(self, key: str) -> list[dict[str, Any]]:
        """Per-image rows of a finished trial (empty for unknown or failed trials)."""
        return self._rows.get(key, [])

    def shifted_rows(self, key: str) -> list[dict[str, Any]]:
        """Per-image rows of a finished trial on the held-out site's test slices (empty where the data
        have none)."""
        return self._shifted.get(key, [])

    def finished(self, key: str) -> bool:
        """True when the trial ended ok and its per-image rows are stored: a resume skips it."""
        return self._records.get(key, {}).get("status") == "ok" and bool(self._rows.get(key))

    # -- writing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Hold the folder for one writing run. A second run on the same folder, while this one lives,
        is refused with a UsageError naming the holder, instead of both rewriting the same files.

        A POSIX advisory lock on ``<root>/.lock``, released by the kernel when the process ends, a
        SIGKILL included: no stale lock to clean up. Where ``fcntl`` is missing (Windows) there is no
        lock; run one study per folder there.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:
            yield
            return
        fd = os.open(self.root / ".lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "pid unknown"
                raise UsageError(
                    f"{self.root} is in use by another augforge run ({holder}); wait for it to "
                    "finish, or give this run another --out"
                ) from None
            os.ftruncate(fd, 0)
            stamp = utc_stamp()
            os.pwrite(fd, f"pid {os.getpid()}, since {stamp}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def commit(
        self, record: dict[str, Any], rows: Iterable[dict[str, Any]] = (), shifted: Iterable[dict[str, Any]] = ()
    ) -> None:
        """Store a finished trial (replacing an earlier record with the same key): rows first (the
        held-out site's too), then the record, each file replaced atomically."""
        key = record["key"]
        for table, new_rows, write in (
            (self._rows, list(rows), self._write_rows),
            (self._shifted, list(shifted), self._write_shifted),
        ):
            if new_rows or key in table:
                if new_rows:
                    table[key] = new_rows
                else:
                    table.pop(key, None)
                write()
        self._records[key] = _clean_nan(record)
        self._write_records()

    def _write_shifted(self) -> None:
        atomic_write_text(self.per_image_shifted_path, _csv_text(PER_IMAGE_COLUMNS, self._shifted.values()))

    def _write_rows(self) -> None:
        atomic_write_text(self.per_image_path, _csv_text(PER_IMAGE_COLUMNS, self._rows.values()))

    def _write_records(self) -> None:
        text = "".join(json.dumps(r, sort_keys=True, default=json_default) + "\n" for r in self._records.values())
        atomic_write_text(self.trials_path, text)

    def log(self, message: str) -> None:
        """Append timestamped lines to run.log (a log, not results: appended, not replaced)."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = utc_stamp()
        with self.log_path.open("a", encoding="utf-8") as f:
            for line in message.rstrip("\n").splitlines() or [""]:
                f.write(f"{stamp} {line}\n")
