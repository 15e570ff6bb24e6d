"""The run directory of ``rftt eval``: what makes a run resumable.

Layout of ``--out``::

    run.json            the settings that decide the answers (fingerprint); written first
    records.jsonl       one JSON line per finished question, appended and flushed (fsync) as each
                        question finishes; never rewritten except to cut a torn last line
    trees/<id>.json     tree mode: the search tree of each question (written before its record)
    results.json / results.md / accuracy_vs_rollouts.png   rebuilt from the records at the end
    .lock               pid of the process writing here (a second writer is refused)

Resume: a new run with the same ``--out`` reads ``records.jsonl`` (through the project's one
append-only journal, :class:`rftt_plugin.store.journal.Journal`), skips every question that has a
record and appends the rest. If the process died mid-write, the last line may be torn: it is
cut off (with a warning) and that question runs again; an unreadable line in the middle is
skipped with a warning. A run whose fingerprint differs from ``run.json`` is refused with the
differing settings listed on one line, unless ``overwrite`` (then the old records, trees and
results go). The fingerprint holds the settings and the contents of the model's files and of each
benchmark's input file (:mod:`rftt_plugin.fingerprint`); a benchmark added on a rerun is merged in.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

RUN_FILE = "run.json"
RECORDS_FILE = "records.jsonl"
TREES_DIR = "trees"
LOCK_FILE = ".lock"
RESULT_FILES = ("results.json", "results.md", "accuracy_vs_rollouts.png")
RUN_FORMAT = "rftt-eval-run/1"


class RunMismatch(RuntimeError):
    """``--out`` holds a run made with other settings."""


class RunLocked(RuntimeError):
    """Another live process is writing to this ``--out``."""


def fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty list = same run).

    >>> fingerprint_diff({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4})
    ['b: the run has 2, this command has 3', 'c: the run has (unset), this command has 4']
    """
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{line}" for line in fingerprint_diff(a, b)]
        elif a != b:
            out.append(f"{key}: the run has {a}, this command has {b}")
    return out


def _inputs_views(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict, dict, dict]:
    """(old, new) restricted to the ``inputs`` of benchmarks both read, and the merged fingerprint
    to record: adding or leaving out a benchmark on a rerun is fine (records are per question), a
    CHANGED input file of a benchmark in both is a difference.

    >>> _inputs_views({"inputs": {"a": 1, "b": 2}}, {"inputs": {"b": 3, "c": 4}})
    ({'inputs': {'b': 2}}, {'inputs': {'b': 3}}, {'inputs': {'a': 1, 'b': 3, 'c': 4}})
    """
    a, b = old.get("inputs"), new.get("inputs")
    if not isinstance(a, dict) or not isinstance(b, dict):
        return old, new, new
    common = [k for k in b if k in a]
    return ({**old, "inputs": {k: a[k] for k in common}}, {**new, "inputs": {k: b[k] for k in common}},
            {**new, "inputs": {**a, **b}})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LoadReport:
    records: dict[str, dict] = field(default_factory=dict)
    cut_tail: bool = False            # a torn last line was removed
    skipped: list[str] = field(default_factory=list)  # "records.jsonl:LINE: why"


class RunStore:
    """Owns ``--out`` for one run (use as a context manager: it holds the lock)."""

    def __init__(self, out: str | os.PathLike, fingerprint: dict[str, Any], *, overwrite: bool = False,
                 warn: Callable[[str], None] | None = None):
        self.out = Path(out).expanduser()
        self.fingerprint = json.loads(json.dumps(fingerprint))  # JSON-normalised (tuples -> lists)
        self.overwrite = overwrite
        self.warn = warn or (lambda msg: None)
        self._journal = None
        self._locked = False
        self.loaded = LoadReport()

    @property
    def records_path(self) -> Path:
        return self.out / RECORDS_FILE

    @property
    def trees_dir(self) -> Path:
        return self.out / TREES_DIR

    def tree_path(self, item_id: str) -> Path:
        return self.trees_dir / f"{item_id}.json"

    # -- open / close ---------------------------------------------------------------------------
    def __enter__(self) -> "RunStore":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> LoadReport:
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._check_or_write_fingerprint()
            self.loaded = self._open_records()
        except BaseException:
            self.close()
            raise
        return self.loaded

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._locked:
            try:
                (self.out / LOCK_FILE).unlink()
            except FileNotFoundError:
                pass
            self._locked = False

    def _lock(self) -> None:
        path = self.out / LOCK_FILE
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise RunLocked(f"{self.out}: another rftt eval (pid {pid}) is writing here; wait for it "
                                    f"or remove {path} if that process is gone") from None
                path.unlink(missing_ok=True)  # stale lock of a dead process
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self._locked = True
            return
        raise RunLocked(f"{self.out}: could not take {path}")

    def _check_or_write_fingerprint(self) -> None:
        run_file = self.out / RUN_FILE
        if run_file.exists() and not self.overwrite:
            try:
                old = json.loads(run_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise RunMismatch(f"{run_file}: unreadable ({exc.msg}); pass --overwrite to start afresh") from exc
            old_fp = old.get("fingerprint", {}) if isinstance(old, dict) else {}
            old_view, new_view, merged = _inputs_views(old_fp, self.fingerprint)
            diff = fingerprint_diff(old_view, new_view)
            if not diff:
                if merged != old_fp:  # a benchmark was added: record its input file too
                    self.fingerprint = merged
                    self._write_run_file(run_file)
                return
            if self.records_path.exists() and self.records_path.stat().st_size > 0:
                files = [d.split(":")[0] for d in diff if d.startswith(("weights", "tokenizer_files", "inputs"))]
                what = (f"the files it was made from changed ({', '.join(files)})" if files
                        else "it holds a run with other settings")
                raise RunMismatch(
                    f"{self.out}: {what}; resuming would mix answers of two configurations: " + "; ".join(diff))
            # A run that never finished a question (e.g. the model failed to load) has nothing
            # that could be mixed up: take the new settings.
            self.warn(f"{run_file}: no finished question in this run yet; replacing its settings")
        if self.overwrite:
            self._clear()
        elif self.records_path.exists() and self.records_path.stat().st_size:
            raise RunMismatch(f"{self.out} has {RECORDS_FILE} but no {RUN_FILE}: not a run this tool can "
                              f"resume; use another --out or --overwrite")
        self._write_run_file(run_file)

    def _write_run_file(self, run_file: Path) -> None:
        tmp = run_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"format": RUN_FORMAT, "fingerprint": self.fingerprint}, indent=2),
                       encoding="utf-8")
        tmp.replace(run_file)

    def _clear(self) -> None:
        for name in (RECORDS_FILE, RUN_FILE, *RESULT_FILES):
            (self.out / name).unlink(missing_ok=True)
        if self.trees_dir.exists():
            shutil.rmtree(self.trees_dir)

    # -- records ----------------------------------------------------------------------------------
    def _open_records(self) -> LoadReport:
        """Read records.jsonl through the project's one journal (rftt_plugin.store.journal): a torn
        last line is cut, an unreadable middle line is skipped (its question runs again), a last
        line that parses but lost its newline is kept. Returns what was on disk."""
        from rftt_plugin.store.journal import Journal

        self._journal = Journal(self.records_path, lock=False, damaged_middle="skip", unterminated_last="keep",
                                require_key="id", allow_nan=True,
                                warn=lambda msg: self.warn(msg.replace("it is redone", "that question runs again")))
        report = LoadReport(cut_tail=self._journal.torn_tail, skipped=list(self._journal.skipped))
        for record in self._journal.records:
            report.records[str(record["id"])] = record
        return report

    def append(self, record: dict) -> None:
        """Write one finished question; on return it is on disk."""
        if self._journal is None:
            raise RuntimeError("RunStore is not open")
        self._journal.append(record)
        self.loaded.records[str(record["id"])] = record
