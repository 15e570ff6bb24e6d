"""verl RL parquet for RFTT: one row per question, the question alone as the user turn.

Row schema (what verl's ``RLHFDataset`` and our reward read)::

    prompt        [{"role": "user", "content": <question>}]     (no system prompt, no format hint:
                                                                 the paper's protocol; the tags are
                                                                 learned in the SFT warm-up)
    data_source   "rftt_math" (only rftt_plugin.reward handles it) unless --data-source is given
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": <gold answer string>}
    extra_info    {"index": i, "split": ..., "source": "<file:row>", "level": ..., "subject": ...}

Gold answers: ``answer`` / ``final_answer`` fields when present (lists are stored as a JSON
list string), else the last ``\\boxed{}`` of ``solution`` (MATH), else the number after ``####``
(GSM8K). Rows without a question or a usable gold are rejected with the reason and kept in
``rejected.jsonl`` so nothing is lost silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rftt_plugin.data.sources import Record

QUESTION_FIELDS = ("problem", "question", "prompt", "query")
GOLD_FIELDS = ("answer", "final_answer", "ground_truth", "gold")
SOLUTION_FIELDS = ("solution", "reference_solution")
META_FIELDS = {"level": ("level",), "subject": ("subject", "type", "subfield"), "id": ("unique_id", "id", "idx")}
DEFAULT_DATA_SOURCE = "rftt_math"


class RowError(ValueError):
    def __init__(self, where: str, field_name: str, reason: str):
        super().__init__(f"{where}: field {field_name!r}: {reason}")
        self.where, self.field, self.reason = where, field_name, reason


def _first(data: dict, names: Iterable[str]) -> tuple[str | None, Any]:
    for name in names:
        if name in data and data[name] is not None:
            return name, data[name]
    return None, None


def question_of(record: Record) -> str:
    name, value = _first(record.data, QUESTION_FIELDS)
    if name is None:
        raise RowError(record.where, "/".join(QUESTION_FIELDS), "missing")
    if isinstance(value, list) and value and isinstance(value[-1], dict) and "content" in value[-1]:
        value = value[-1]["content"]  # already chat messages
    if not isinstance(value, str):
        raise RowError(record.where, name, f"expected text, got {type(value).__name__}")
    text = value.replace("\x00", "").strip()
    if not text:
        raise RowError(record.where, name, "empty")
    return text


def gold_of(record: Record) -> str:
    """The gold answer as a string the reward's ``normalize_gold`` understands."""
    from rftt_plugin.reward.extract import last_boxed, normalize_gold

    data = record.data
    name, value = _first(data, GOLD_FIELDS)
    present = next((k for k in GOLD_FIELDS if k in data), None)
    if name is None and present is not None and not any(data.get(k) is not None for k in SOLUTION_FIELDS):
        raise RowError(record.where, present, "null; expected the answer as text or a number")
    if name is not None:
        value = _plain_gold(record.where, name, value)
    if name is None:
        name, value = _first(data, SOLUTION_FIELDS)
        if name is None:
            raise RowError(record.where, "/".join(GOLD_FIELDS + SOLUTION_FIELDS), "missing")
        boxed = last_boxed(str(value))
        if boxed is None:  # a full solution without \boxed{} has no answer we could grade against
            raise RowError(record.where, name, "no \\boxed{} answer in the solution")
        value = boxed
    gold = normalize_gold(value)
    if not gold.usable:
        raise RowError(record.where, name, f"no usable gold answer in {str(value)[:80]!r}")
    if isinstance(value, (list, tuple)):
        if len(value) == 1:  # [4] is the answer 4, not a one-item answer list
            return _scalar_text(value[0])
        return json.dumps([_scalar_text(v) for v in value], ensure_ascii=False)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _scalar_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _plain_gold(where: str, name: str, value: Any) -> Any:
    """Refuse gold answers whose type has no sensible answer text (dict, bool, nested lists)."""
    def bad(v: Any) -> bool:
        return isinstance(v, (dict, bool)) or v is None or not isinstance(v, (str, int, float))

    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy values from parquet
    if isinstance(value, (list, tuple)):
        if not value:
            raise RowError(where, name, "empty list; expected the answer as text or a number")
        for v in value:
            if bad(v):
                raise RowError(where, name, f"list holds a {type(v).__name__ if v is not None else 'null'}; "
                                            "expected text or numbers")
        return value
    if bad(value):
        raise RowError(where, name, f"is a {type(value).__name__}; expected the answer as text or a number")
    return value


def question_and_gold(record: Record, rejected: list[dict]) -> tuple[str, str] | None:
    """``(question, gold)`` of a record, or None after appending why it is unusable to ``rejected``
    (``{"where": "file:row", "field": ..., "reason": ...}``): the one place bad rows are named."""
    if "__error__" in record.data:
        rejected.append({"where": record.where, "field": "*", "reason": record.data["__error__"]})
        return None
    try:
        return question_of(record), gold_of(record)
    except RowError as exc:
        rejected.append({"where": exc.where, "field": exc.field, "reason": exc.reason})
        return None


def build_row(record: Record, index: int, question: str, gold: str, *, split: str, data_source: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"index": index, "split": split, "source": record.where}
    for key, names in META_FIELDS.items():
        _, value = _first(record.data, names)
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
