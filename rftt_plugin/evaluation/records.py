"""The ``rftt eval`` run directory: a :class:`~rftt_plugin.store.run_dir.RunDir` with this layout::

    run.json            the settings that decide the answers (fingerprint); written first
    records.jsonl       one JSON line per finished question, appended and flushed (fsync) as each
                        question finishes
    trees/<id>.json     tree mode: the search tree of each question (written before its record)
    results.json / results.md / accuracy_vs_rollouts.png   rebuilt from the records at the end

Resume policy of records.jsonl (questions are keyed by ``id`` inside each line): a torn last line
is cut (that question runs again), an unreadable middle line is skipped with a warning (that
question runs again), a last line that parses but lost its newline is kept. A benchmark added on
a rerun is merged into the fingerprint's ``inputs``; a changed input file is a mismatch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rftt_plugin.store.run_dir import JournalSpec, RunDir

RECORDS_FILE = "records.jsonl"
TREES_DIR = "trees"
RESULT_FILES = ("results.json", "results.md", "accuracy_vs_rollouts.png")
RUN_FORMAT = "rftt-eval-run/1"


@dataclass
class LoadReport:
    records: dict[str, dict] = field(default_factory=dict)
    cut_tail: bool = False            # a torn last line was removed
    skipped: list[str] = field(default_factory=list)  # "records.jsonl:LINE: why"


class EvalRunDir(RunDir):
    """``--out`` of one ``rftt eval`` run; ``loaded`` holds the records found on open."""

    def __init__(self, out: str | os.PathLike, fingerprint: dict[str, Any], *, overwrite: bool = False,
                 warn: Callable[[str], None] | None = None):
        user_warn = warn or (lambda msg: None)
        super().__init__(out, fingerprint, tool="rftt eval", run_format=RUN_FORMAT,
                         journals={"records": JournalSpec(RECORDS_FILE, damaged_middle="skip", unterminated_last="keep",
                                                          require_key="id", allow_nan=True)},
                         outputs=(TREES_DIR, *RESULT_FILES), overwrite=overwrite, merge_inputs=True,
                         warn=lambda msg: user_warn(msg.replace("it is redone", "that question runs again")))
        self.loaded = LoadReport()

    @property
    def records_path(self) -> Path:
        return self.path("records")

    @property
    def trees_dir(self) -> Path:
        return self.out / TREES_DIR

    def tree_path(self, item_id: str) -> Path:
        return self.trees_dir / f"{item_id}.json"

    def open(self) -> LoadReport:
        super().open()
        journal = self.journal("records")
        self.loaded = LoadReport(cut_tail=journal.torn_tail, skipped=list(journal.skipped))
        for record in journal.records:
            self.loaded.records[str(record["id"])] = record
        return self.loaded

    def append(self, record: dict) -> None:
        """Write one finished question; on return it is on disk."""
        self.journal("records").append(record)
        self.loaded.records[str(record["id"])] = record
