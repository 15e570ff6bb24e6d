"""An append-only JSON-lines journal: one record per finished unit of work, crash-safe.

Long data jobs (``rftt gen-sft``) write each finished question as one line and, on restart, read
the journal back to skip what is done. The rules that make this lose nothing:

* **Append, flush, fsync per record.** A record is either entirely on disk or (after a crash in
  the middle of a write) a *torn last line*; earlier lines are never rewritten.
* **A torn tail is repaired on open.** The last line is torn when it lacks its newline or is not
  valid JSON; it is cut off (the file is truncated to the end of the last good line) and
  reported in :attr:`Journal.repaired_bytes`. The unit it described was not finished, so the job
  simply does it again.
* **Damage anywhere else is an error**, naming the file and line: only an outside edit can
  produce it, and guessing which units are done would risk silent loss or duplication.
  (``damaged_middle="skip"`` instead skips such a line with a warning, so its unit is redone:
  right where a unit is identified by a key inside the line, as in ``rftt eval``.)
* **One writer per journal.** :class:`Journal` takes an exclusive advisory lock
  (``fcntl.flock``) on a sibling ``.lock`` file for its lifetime, so two jobs pointed at the
  same output directory fail fast instead of interleaving lines (``lock=False`` when the owner
  locks the whole directory itself).

This is the one journal of the project's resumable outputs: ``rftt gen-sft`` (trees.jsonl,
samples.jsonl) and ``rftt eval`` (records.jsonl, through
:class:`rftt_plugin.store.run_dir.RunStore`, which adds the run fingerprint and a directory lock).

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> with Journal(os.path.join(d, "j.jsonl")) as j:
...     j.append({"key": "a"})
>>> with open(os.path.join(d, "j.jsonl"), "a") as f:
...     _ = f.write('{"key": "b", "x": [1, 2')      # a crash mid-write
>>> with Journal(os.path.join(d, "j.jsonl")) as j:
...     [r["key"] for r in j.records], j.repaired_bytes > 0
(['a'], True)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["Journal", "JournalError"]


class JournalError(RuntimeError):
    """The journal cannot be used (damaged in the middle, or locked by another writer)."""


class Journal:
    """Open (creating if needed), repair and lock ``path``; ``records`` holds what was on disk.

    Options (defaults: the strict policy above):

    * ``damaged_middle``: ``"raise"`` (:class:`JournalError`) or ``"skip"`` (warn, list the line
      in ``skipped``; its unit is redone);
    * ``unterminated_last``: a last line that parses but lacks its newline is ``"redo"`` (cut, like
      a torn line) or ``"keep"`` (kept; the newline is added);
    * ``require_key``: a record without this key counts as damaged;
    * ``allow_nan``: whether :meth:`append` may write NaN/Infinity (not strict JSON);
    * ``warn``: called with one line per repaired or skipped line.
    """

    def __init__(self, path: str | os.PathLike, lock: bool = True, *, damaged_middle: str = "raise",
                 unterminated_last: str = "redo", require_key: str | None = None, allow_nan: bool = False,
                 warn: Callable[[str], None] | None = None):
        if damaged_middle not in ("raise", "skip") or unterminated_last not in ("redo", "keep"):
            raise ValueError("damaged_middle must be raise/skip and unterminated_last redo/keep")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.damaged_middle, self.unterminated_last = damaged_middle, unterminated_last
        self.require_key, self.allow_nan = require_key, allow_nan
        self.warn = warn or (lambda _msg: None)
        self.skipped: list[str] = []  # "path:line: why" of skipped middle lines
        self.torn_tail = False        # a torn (unparseable) last line was cut off
        self._lock_fh = None
        if lock:
            self._acquire_lock()
        try:
            self.records, self.repaired_bytes = self._load()
            self._fh = self.path.open("a", encoding="utf-8")
        except BaseException:
            self._release_lock()
            raise

    # -- locking ---------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        fh = lock_path.open("a")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.close()
            raise JournalError(f"{self.path} is being written by another process (lock {lock_path}); "
                               f"wait for it to finish or use another output directory") from exc
        self._lock_fh = fh

    def _release_lock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()  # closing the descriptor releases the flock
            self._lock_fh = None

    # -- reading ---------------------------------------------------------------------------------
    def _load(self) -> tuple[list[dict[str, Any]], int]:
        if not self.path.exists():
            self.path.touch()
            return [], 0
        data = self.path.read_bytes()
        records: list[dict[str, Any]] = []
        good_end = 0  # byte offset just after the last good line
        pos = 0
        line_no = 0
        add_newline = False
        while pos < len(data):
            line_no += 1
            nl = data.find(b"\n", pos)
            end = len(data) if nl < 0 else nl
            raw = data[pos:end]
            last = nl < 0 or not data[nl + 1:].strip()  # nothing but whitespace follows
            try:
                record = json.loads(raw.decode("utf-8")) if raw.strip() else None
                if record is not None and not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
                if record is not None and self.require_key and self.require_key not in record:
                    raise ValueError(f"not a record object with an {self.require_key!r}")
            except (UnicodeDecodeError, ValueError) as exc:
                if last:
                    if raw.strip():
                        self.torn_tail = True
                        self.warn(f"{self.path}:{line_no}: incomplete last line removed ({exc}); it is redone")
                    break  # a torn tail: repaired below
                if self.damaged_middle == "skip":
                    self.skipped.append(f"{self.path}:{line_no}: {exc}")
                    self.warn(f"{self.path}:{line_no}: unreadable line skipped ({exc}); it is redone")
                    pos = nl + 1
                    continue
                raise JournalError(f"{self.path}:{line_no}: damaged record ({exc}); it is not the last line, "
                                   f"so it was not torn by a crash. Fix or remove that line by hand.") from exc
            if nl < 0:
                if self.unterminated_last == "keep" and record is not None:
                    records.append(record)
                    good_end, add_newline = len(data), True
                break  # "redo": valid JSON but no newline: the write was cut before its end
            if record is not None:
                records.append(record)
            pos = good_end = nl + 1
        repaired = len(data) - good_end
        if repaired:
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        elif add_newline:
            with self.path.open("ab") as fh:  # the next append must start on a new line
                fh.write(b"\n")
        return records, repaired

    # -- writing ---------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line and force it to disk before returning."""
        line = json.dumps(record, ensure_ascii=False, allow_nan=self.allow_nan)
        if "\n" in line:  # json.dumps never emits raw newlines; guard the invariant anyway
            raise ValueError("a journal record must serialise to a single line")
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if getattr(self, "_fh", None) is not None and not self._fh.closed:
            self._fh.close()
        self._release_lock()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
