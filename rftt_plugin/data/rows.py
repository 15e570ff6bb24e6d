"""A question row: which fields of a source record hold the question and the gold answer, and how
a broken row is named.

Every reader of question files (``rftt data rl``, the benchmark loaders, ``rftt search``, phase 1)
goes through this module, so a row is accepted or refused, and its error worded, the same way
everywhere: ``file:row: field 'name': reason``.

Field names are matched exactly first, then case-insensitively (``Problem``/``Answer`` copies).
Gold answers come from the first gold field present (text, a number, or a list that must all be
matched), else from the last ``\\boxed{}`` of a solution field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from rftt_plugin.data.sources import Record


class RowError(ValueError):
    def __init__(self, where: str, field_name: str, reason: str):
        super().__init__(f"{where}: field {field_name!r}: {reason}")
        self.where, self.field, self.reason = where, field_name, reason


@dataclass(frozen=True)
class RowFields:
    """Where a row keeps its question and gold answer (first present name wins)."""

    question: tuple[str, ...] = ("problem", "question", "prompt", "query")
    gold: tuple[str, ...] = ("answer", "final_answer", "ground_truth", "gold")
    solution: tuple[str, ...] = ("solution", "reference_solution")  # fall back to their last \boxed{}
    context: str | None = None  # text put before the question when present (OlympiadBench physics)


ANY_FIELDS = RowFields()  # a question file of unknown origin: every spelling we know


def plain(value: Any) -> Any:
    """numpy / pyarrow scalars and arrays -> plain Python (parquet and hub rows come through them)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def field_value(data: dict, names: Iterable[str]) -> tuple[str | None, Any]:
    """First present, non-None field among ``names`` (exact match first, then case-insensitive)."""
    names = tuple(names)
    for name in names:
        if data.get(name) is not None:
            return name, data[name]
    lowered = {k.lower(): k for k in data if isinstance(k, str)}
    for name in names:
        key = lowered.get(name.lower())
        if key is not None and data[key] is not None:
            return key, data[key]
    return None, None


def check_readable(record: Record) -> None:
    """A line the reader could not parse (bad JSON) is a row error on every field."""
    if "__error__" in record.data:
        raise RowError(record.where, "*", record.data["__error__"])


def question_of(record: Record, fields: RowFields = ANY_FIELDS) -> str:
    name, value = field_value(record.data, fields.question)
    if name is None:
        raise RowError(record.where, "/".join(fields.question), "missing")
    if isinstance(value, list) and value and isinstance(value[-1], dict) and "content" in value[-1]:
        value = value[-1]["content"]  # already chat messages
    if not isinstance(value, str):
        raise RowError(record.where, name, f"expected text, got {type(value).__name__}")
    text = value.replace("\x00", "").strip()
    if not text:
        raise RowError(record.where, name, "empty")
    if fields.context:
        _, context = field_value(record.data, (fields.context,))
        if isinstance(context, str) and context.strip():
            text = f"{context.strip()}\n\n{text}"
    return text


@dataclass(frozen=True)
class Gold:
    """A row's gold answer: ``text`` as the row wrote it (what the RL parquet stores; the reward
    normalises it again), ``items`` as the grader will compare them."""

    field: str
    text: str
    items: tuple[str, ...]

    @property
    def normalized_text(self) -> str:
        """The single item, or a JSON list of the items (``normalize_gold`` gives them back)."""
        return self.items[0] if len(self.items) == 1 else json.dumps(list(self.items), ensure_ascii=False)


def read_gold(record: Record, fields: RowFields = ANY_FIELDS, data_source: str | None = None) -> Gold:
    """The row's gold answer under the reward's normalisation rules (``data_source`` picks a
    benchmark's own rules, e.g. AIME ``"025"``)."""
    from rftt_plugin.reward.extract import last_boxed, normalize_gold

    data = record.data
    name, value = field_value(data, fields.gold)
    if name is not None:
        value = _plain_gold(record.where, name, value)
    else:
        null_field = next((k for k in fields.gold if k in data), None)
        solution_field, solution = field_value(data, fields.solution)
        if solution_field is None:
            if null_field is not None:
                raise RowError(record.where, null_field, "null; expected the answer as text or a number")
            raise RowError(record.where, "/".join(fields.gold + fields.solution), "missing")
        name, value = solution_field, last_boxed(str(solution))
        if value is None:  # a full solution without \boxed{} has no answer we could grade against
            raise RowError(record.where, name, "no gold field and no \\boxed{} answer in the solution")
    if isinstance(value, str) and not value.strip():
        raise RowError(record.where, name, "empty")
    gold = normalize_gold(value, data_source)
    if not gold.usable:
        raise RowError(record.where, name, f"no usable gold answer in {str(value)[:80]!r}")
    return Gold(name, _as_written(value), gold.items)


def gold_of(record: Record, fields: RowFields = ANY_FIELDS) -> str:
    """The gold answer as the row wrote it, as a string the reward's ``normalize_gold`` understands."""
    return read_gold(record, fields).text


def _scalar_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _as_written(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        if len(value) == 1:  # [4] is the answer 4, not a one-item answer list
            return _scalar_text(value[0])
        return json.dumps([_scalar_text(v) for v in value], ensure_ascii=False)
    return _scalar_text(value)


def _plain_gold(where: str, name: str, value: Any) -> Any:
    """Refuse gold answers whose type has no sensible answer text (dict, bool, nested lists)."""
    def bad(v: Any) -> bool:
        return isinstance(v, (dict, bool)) or v is None or not isinstance(v, (str, int, float))

    value = plain(value)
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
    """``(question, gold as written)`` of a record, or None after appending why it is unusable to
    ``rejected`` (``{"where": "file:row", "field": ..., "reason": ...}``)."""
    try:
        check_readable(record)
        return question_of(record), gold_of(record)
    except RowError as exc:
        rejected.append({"where": exc.where, "field": exc.field, "reason": exc.reason})
        return None
