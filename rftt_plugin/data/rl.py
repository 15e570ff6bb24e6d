"""verl RL parquet for RFTT: one row per question, the question alone as the user turn.

Row schema (what verl's ``RLHFDataset`` and our reward read)::

    prompt        [{"role": "user", "content": <question>}]     (no system prompt, no format hint:
                                                                 the paper's protocol; the tags are
                                                                 learned in the SFT warm-up)
    data_source   "rftt_math" (only rftt_plugin.reward handles it) unless --data-source is given
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": <gold answer string>}
    extra_info    {"index": i, "split": ..., "source": "<file:row>", "level": ..., "subject": ...}

Which fields hold the question and the gold, and how a bad row is named: :mod:`rftt_plugin.data.rows`.
The gold is stored as the row wrote it (a list as a JSON list string, a solution's last
``\\boxed{}``; the reward normalises it). Rows without a question or a usable gold are rejected
with the reason and kept in ``rejected.jsonl`` so nothing is lost silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rftt_plugin.data.rows import field_value, question_and_gold
from rftt_plugin.data.sources import Record

META_FIELDS = {"level": ("level",), "subject": ("subject", "type", "subfield"), "id": ("unique_id", "id", "idx")}
DEFAULT_DATA_SOURCE = "rftt_math"


def build_row(record: Record, index: int, question: str, gold: str, *, split: str, data_source: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"index": index, "split": split, "source": record.where}
    for key, names in META_FIELDS.items():
        _, value = field_value(record.data, names)
        if value is not None:
            extra[key] = str(value)
    return {
        "prompt": [{"role": "user", "content": question}],
        "data_source": data_source,
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": gold},
        "extra_info": extra,
    }


@dataclass
class BuildReport:
    written: dict[str, int] = field(default_factory=dict)
    rejected: list[dict] = field(default_factory=list)
    read: int = 0


def build_rows(records: Iterable[Record], *, split: str, data_source: str = DEFAULT_DATA_SOURCE,
               limit: int | None = None, report: BuildReport | None = None) -> list[dict]:
    report = report if report is not None else BuildReport()
    rows: list[dict] = []
    for record in records:
        if limit is not None and len(rows) >= limit:
            break
        report.read += 1
        usable = question_and_gold(record, report.rejected)
        if usable is not None:
            rows.append(build_row(record, len(rows), *usable, split=split, data_source=data_source))
    return rows


def write_parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    # extra_info keys differ between rows (level/subject present or not): store as JSON-able structs
    # with every key present so the parquet schema is uniform.
    keys = sorted({k for r in rows for k in r["extra_info"]})
    for r in rows:
        r["extra_info"] = {k: r["extra_info"].get(k) for k in keys}
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written parquet behind
