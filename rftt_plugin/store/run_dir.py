"""The one resumable-run directory of the project (``rftt eval``, ``rftt gen-sft``, ``rftt search``).

A long job writes into ``--out``::

    run.json      {"format": ..., "fingerprint": ...}: the settings and input/model file contents
                  that decide the results; written first
    <journals>    append-only JSON-lines files (:class:`rftt_plugin.store.journal.Journal`), one
                  line per finished unit, fsynced; a torn last line is cut on reopen
    <outputs>     files and folders rebuilt from the journals (results, parquet, trees)
    .lock         pid of the process writing here (a second live writer is refused)

Resume: reopening with the same fingerprint reads the journals back and the job skips what is
done. A different fingerprint is refused with the differing settings on one line
(:class:`RunMismatch`) when any journal holds a finished unit, because resuming would mix results
of two configurations; a run that never finished a unit just takes the new settings.
``overwrite=True`` removes the old journals and outputs first. With ``merge_inputs`` (eval) a
fingerprint's ``inputs`` table may gain entries between runs (a benchmark added) but an input
present in both must be unchanged.

The job-specific layout (file names, journal policies) is given by the caller: see
:class:`rftt_plugin.evaluation.records.EvalRunDir`, :class:`rftt_plugin.phase1.job.GenSftJob` and
:class:`rftt_plugin.jobs.search.SearchRunDir`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rftt_plugin.store.journal import Journal

RUN_FILE = "run.json"
LOCK_FILE = ".lock"


class RunMismatch(RuntimeError):
    """``--out`` holds a run made with other settings; ``diff`` lists the differing settings
    (:func:`fingerprint_diff` lines; empty when run.json is missing or unreadable)."""

    def __init__(self, message: str, diff: list[str] | None = None):
        super().__init__(message)
        self.diff = list(diff or [])


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


@dataclass(frozen=True)
class JournalSpec:
    """One journal of a run directory and how damage in it is handled (see :class:`Journal`)."""

    file: str
    damaged_middle: str = "raise"
    unterminated_last: str = "redo"
    require_key: str | None = None
    allow_nan: bool = False


class RunDir:
    """Owns ``out`` for one run; use as a context manager (it holds the lock and the journals).

    ``journals`` maps a name to its :class:`JournalSpec`; after :meth:`open`, :meth:`journal`
    returns the open :class:`Journal`. ``outputs`` are the files/folders (relative to ``out``)
    that ``overwrite`` removes besides the journals and run.json.
    """

    def __init__(self, out: str | os.PathLike, fingerprint: dict[str, Any], *, tool: str, run_format: str,
                 journals: dict[str, JournalSpec], outputs: tuple[str, ...] = (), overwrite: bool = False,
                 merge_inputs: bool = False, warn: Callable[[str], None] | None = None):
        self.out = Path(out).expanduser()
        self.fingerprint = json.loads(json.dumps(fingerprint))  # JSON-normalised (tuples -> lists)
        self.tool, self.run_format = tool, run_format
        self.specs = dict(journals)
        self.outputs = tuple(outputs)
        self.overwrite, self.merge_inputs = overwrite, merge_inputs
        self.warn = warn or (lambda msg: None)
        self._journals: dict[str, Journal] = {}
        self._locked = False

    def path(self, name: str) -> Path:
        return self.out / self.specs[name].file

    def journal(self, name: str) -> Journal:
        if name not in self._journals:
            raise RuntimeError(f"{self.out}: journal {name!r} is not open (use the run directory as a context manager)")
        return self._journals[name]

    # -- open / close ---------------------------------------------------------------------------
    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._check_or_write_fingerprint()
            for name, spec in self.specs.items():
                self._journals[name] = Journal(self.out / spec.file, lock=False, damaged_middle=spec.damaged_middle,
                                               unterminated_last=spec.unterminated_last, require_key=spec.require_key,
                                               allow_nan=spec.allow_nan, warn=self.warn)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for journal in self._journals.values():
            journal.close()
        self._journals.clear()
        if self._locked:
            (self.out / LOCK_FILE).unlink(missing_ok=True)
            self._locked = False

    def check(self) -> None:
        """The fingerprint check alone, with no side effects (a CLI runs it before loading a model)."""
        if (self.out / RUN_FILE).exists() and not self.overwrite:
            self._compare(self.out / RUN_FILE)  # raises on a mismatch that would mix results

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
                    raise RunLocked(f"{self.out}: another {self.tool} (pid {pid}) is writing here; wait for it "
                                    f"or remove {path} if that process is gone") from None
                path.unlink(missing_ok=True)  # stale lock of a dead process
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self._locked = True
            return
        raise RunLocked(f"{self.out}: could not take {path}")

    def _has_finished_units(self) -> bool:
        return any((self.out / spec.file).exists() and (self.out / spec.file).stat().st_size > 0
                   for spec in self.specs.values())

    def _compare(self, run_file: Path) -> str:
        """``"same"`` when run.json records this run, ``"merged"`` when it does once an added input is
        recorded, ``"replace"`` when it records other settings but nothing finished under them;
        raises :class:`RunMismatch` when it records another run that already finished units."""
        try:
            old = json.loads(run_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunMismatch(f"{run_file}: unreadable ({exc}); pass --overwrite to start afresh") from exc
        if not isinstance(old, dict):
            old_fp = {}
        elif "format" in old:
            old_fp = old.get("fingerprint", {})
        else:  # rftt gen-sft before the shared run directory wrote the bare fingerprint
            old_fp = old
        if self.merge_inputs:
            old_view, new_view, merged = _inputs_views(old_fp, self.fingerprint)
        else:
            old_view, new_view, merged = old_fp, self.fingerprint, self.fingerprint
        diff = fingerprint_diff(old_view, new_view)
        if not diff:
            self.fingerprint = merged
            return "same" if merged == old_fp else "merged"
        if self._has_finished_units():
            files = [d.split(":")[0] for d in diff if d.startswith(("weights", "tokenizer_files", "inputs", "model"))]
            what = (f"the files it was made from changed ({', '.join(files)})" if files
                    else "it holds a run with other settings")
            raise RunMismatch(
                f"{self.out}: {what}; resuming would mix results of two configurations: " + "; ".join(diff), diff)
        return "replace"

    def _check_or_write_fingerprint(self) -> None:
        run_file = self.out / RUN_FILE
        if run_file.exists() and not self.overwrite:
            verdict = self._compare(run_file)
            if verdict == "replace":
                # Nothing finished under the old settings (e.g. the model failed to load): nothing
                # can be mixed up, so the new settings replace them.
                self.warn(f"{run_file}: nothing finished in this run yet; replacing its settings")
            if verdict != "same":
                self._write_run_file(run_file)
            return
        if self.overwrite:
            self._clear()
        elif self._has_finished_units():
            raise RunMismatch(f"{self.out} has {', '.join(s.file for s in self.specs.values())} but no {RUN_FILE}: "
                              f"not a run this tool can resume; use another --out or --overwrite")
        self._write_run_file(run_file)

    def _write_run_file(self, run_file: Path) -> None:
        tmp = run_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"format": self.run_format, "fingerprint": self.fingerprint}, indent=2,
                                  ensure_ascii=False), encoding="utf-8")
        tmp.replace(run_file)

    def _clear(self) -> None:
        for name in (RUN_FILE, *(s.file for s in self.specs.values()), *self.outputs):
            path = self.out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
