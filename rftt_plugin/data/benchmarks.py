"""Loaders for the five math benchmarks of the RFTT evaluation, from a local copy or a dataset id.

Every benchmark becomes a list of :class:`BenchmarkItem` (``id``, ``question``, ``gold``,
``metadata``). Sources, in the order they are tried (:func:`resolve_source`):

1. an explicit ``source``: a local ``.jsonl``/``.json``/``.parquet`` file, a directory holding
   one of the benchmark's file names, or a Hugging Face dataset id;
2. the benchmark's file in ``data_dir`` (or its ``eval/`` subdirectory);
3. the public dataset id below (needs the network, or the local HF cache when offline).

======================  ==================================  ==========================  =====
benchmark               public dataset id (subset / split)  local file names            rows
======================  ==================================  ==========================  =====
``math500``             ``HuggingFaceH4/MATH-500`` (test)   math500.jsonl               500
``gsm8k``               ``openai/gsm8k`` (main / test)      gsm8k_test.jsonl, gsm8k.*   1319
``aime24``              ``HuggingFaceH4/aime_2024`` (train) aime24.jsonl, aime_2024.*   30
``amc23``               ``math-ai/amc23`` (test)            amc23.jsonl                 40
``olympiadbench``       ``Hothan/OlympiadBench``            olympiadbench.jsonl         675
                        (OE_TO_maths_en_COMP / train)
======================  ==================================  ==========================  =====

(The hub copy of OlympiadBench's English text-only open-ended maths subset lists 674 rows; the
file distributed with the RFTT evaluation code has 675.)

Gold answers follow the reward's :func:`rftt_plugin.reward.extract.normalize_gold` rules, so what
the loader stores is exactly what the grader will compare against: MATH-500 ``answer`` (else the
last ``\\boxed{}`` of ``solution``), GSM8K the number after ``####`` without thousands separators,
AIME ``"025"`` -> ``"25"``, AMC ``27.0`` -> ``"27"``, OlympiadBench ``final_answer`` lists (every
item must be matched; ``"$a$,$b$"`` entries split into items). ``BenchmarkItem.gold`` is the single
item as text, or a JSON list of the items when there are several; ``normalize_gold(item.gold)``
gives the same items back.

A broken row (bad JSON, no question, no usable gold) raises :class:`~rftt_plugin.data.rows.RowError`
naming ``file:row`` and the field; ``on_error="skip"`` collects it in ``Benchmark.rejected``
instead (the caller must then report that the benchmark is incomplete).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from rftt_plugin.data.rows import RowError, RowFields, check_readable, field_value, plain, question_of, read_gold
from rftt_plugin.data.sources import LOCAL_SUFFIXES, Record, SourceError, read_records

__all__ = [
    "BENCHMARKS", "Benchmark", "BenchmarkError", "BenchmarkItem", "BenchmarkSpec", "ResolvedSource",
    "default_data_dir", "load_benchmark", "load_benchmarks", "parse_benchmark_list", "resolve_source",
]

DATA_DIR_ENV = "RFTT_DATA_DIR"


class BenchmarkError(ValueError):
    """A benchmark cannot be loaded at all (unknown name, missing file, unreachable dataset id)."""


@dataclass(frozen=True)
class BenchmarkItem:
    """One evaluation question.

    ``id`` is ``"<benchmark>-<position>"`` (0-based position in the benchmark, stable for a given
    source; the source's own id is ``metadata["native_id"]``). ``gold`` is a string the reward
    understands (see the module docstring). ``metadata`` holds what breakdowns need (MATH-500
    ``level``/``subject``, OlympiadBench ``answer_type``/``unit``/``is_multiple_answer``...) and
    ``source`` (``file:row``).
    """

    id: str
    question: str
    gold: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def benchmark(self) -> str:
        return self.id.rsplit("-", 1)[0]

    @property
    def question_sha(self) -> str:
        """Short hash of the question text: lets a resumed run notice that the data changed."""
        return hashlib.sha256(self.question.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and which fields hold what (see :mod:`rftt_plugin.data.rows`)."""

    name: str
    title: str
    files: tuple[str, ...]                 # local file names (stems tried with every suffix)
    hub_id: str
    hub_split: str
    hub_subset: str | None = None
    fields: RowFields = RowFields(("problem", "question"), ("answer",), ())
    meta_fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    native_id_fields: tuple[str, ...] = ("id",)
    expected_rows: int | None = None       # size of the reference copy (documentation, tests)


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "math500", "MATH-500", ("math500", "math_500", "MATH-500"), "HuggingFaceH4/MATH-500", "test",
            fields=RowFields(("problem",), ("answer",), ("solution",)),
            meta_fields=(("level", ("level",)), ("subject", ("subject", "type"))),
            native_id_fields=("unique_id",), expected_rows=500),
        BenchmarkSpec(
            "gsm8k", "GSM8K", ("gsm8k_test", "gsm8k"), "openai/gsm8k", "test", hub_subset="main",
            fields=RowFields(("question",), ("answer",), ()), native_id_fields=("idx", "id"), expected_rows=1319),
        BenchmarkSpec(
            "aime24", "AIME 2024", ("aime24", "aime_2024", "aime2024"), "HuggingFaceH4/aime_2024", "train",
            fields=RowFields(("problem", "question"), ("answer",), ()),
            meta_fields=(("url", ("url",)), ("year", ("year",))), native_id_fields=("id",), expected_rows=30),
        BenchmarkSpec(
            "amc23", "AMC 2023", ("amc23", "amc_2023", "amc2023"), "math-ai/amc23", "test",
            fields=RowFields(("problem", "question"), ("answer",), ()),
            meta_fields=(("url", ("url",)),), native_id_fields=("id",), expected_rows=40),
        BenchmarkSpec(
            "olympiadbench", "OlympiadBench", ("olympiadbench", "olympiad_bench", "OlympiadBench"),
            "Hothan/OlympiadBench", "train", hub_subset="OE_TO_maths_en_COMP",
            fields=RowFields(("question", "problem"), ("final_answer", "answer"), (), context="context"),
            meta_fields=(("subfield", ("subfield",)), ("answer_type", ("answer_type",)), ("unit", ("unit",)),
                         ("is_multiple_answer", ("is_multiple_answer",)), ("tolerance", ("error",))),
            native_id_fields=("id",), expected_rows=675),
    )
}

# Benchmarks that are never part of the default list and have no public copy: only a local file
# (`--source NAME=FILE` / --data-dir). `arith` is the synthetic held-out split of the CPU quickstart
# (rftt_plugin.demo.synthetic), written as jsonl with `question` and `answer`.
EXTRA_BENCHMARKS: dict[str, BenchmarkSpec] = {
    "arith": BenchmarkSpec("arith", "Synthetic arithmetic (CPU quickstart)", ("arith_test", "arith"), "", "test",
                           fields=RowFields(("question",), ("answer",), ())),
}

# Names people type for the same benchmark.
_ALIASES = {"math-500": "math500", "math_500": "math500", "gsm8k_test": "gsm8k", "aime": "aime24",
            "aime2024": "aime24", "aime_2024": "aime24", "amc": "amc23", "amc2023": "amc23",
            "olympiad": "olympiadbench", "olympiad_bench": "olympiadbench"}


# A benchmark of the user's own (`rftt eval --source NAME=FILE` with a NAME not listed above): the
# fields it needs, as stated in `rftt eval --help` (USER_FIELDS_HELP).
USER_FIELDS = RowFields(("problem", "question"), ("answer", "final_answer"), ("solution",))
USER_FIELDS_HELP = ("one JSON object per row (.jsonl; also .json, .parquet) with the question in 'problem' or "
                    "'question' and the gold answer in 'answer' or 'final_answer' (text, a number, or a list "
                    "that must all be matched), or else a 'solution' whose last \\boxed{} is the answer; "
                    "optional: 'id', 'level', 'subject'")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def user_spec(name: str) -> BenchmarkSpec:
    """The spec of a user-named benchmark read from a local file (see USER_FIELDS_HELP)."""
    if not _NAME_RE.match(name):
        raise BenchmarkError(f"benchmark name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    return BenchmarkSpec(name, name, (name,), "", "test", fields=USER_FIELDS,
                         meta_fields=(("level", ("level",)), ("subject", ("subject", "type"))),
                         native_id_fields=("id", "unique_id", "idx"))


def spec_for(name: str, user_names: Iterable[str] = ()) -> BenchmarkSpec:
    """The spec of a listed benchmark (or alias); ``user_names``: names given with their own file
    (``--source NAME=FILE``), which may be anything else."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in EXTRA_BENCHMARKS:
        return EXTRA_BENCHMARKS[key]
    if key in BENCHMARKS:
        return BENCHMARKS[key]
    if name.strip() in set(user_names):
        return user_spec(name.strip())
    raise BenchmarkError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}, or give your own "
                         f"file with --source {name.strip()}=FILE")


def parse_benchmark_list(text: str | Iterable[str], user_names: Iterable[str] = ()) -> list[str]:
    """``"math500,gsm8k"`` (or a list) -> canonical names, in order, without repeats."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = [spec_for(p, user_names).name for p in parts if p and p.strip()]
    if not names:
        raise BenchmarkError("no benchmark given; choose from " + ", ".join(BENCHMARKS))
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------------------------------
# Where the data is
# ----------------------------------------------------------------------------------------------

def default_data_dir() -> Path | None:
    """``$RFTT_DATA_DIR`` if set and a directory, else ``./data/eval`` if it exists, else None
    (then the public dataset ids are used). Nothing outside the working directory is searched."""
    for cand in (os.environ.get(DATA_DIR_ENV), "data/eval"):
        if cand and Path(cand).expanduser().is_dir():
            return Path(cand).expanduser().resolve()
    return None


@dataclass(frozen=True)
class ResolvedSource:
    kind: str                 # "local" | "hub"
    location: str             # file path or dataset id
    split: str = "test"
    subset: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "local":
            return self.location
        sub = f"/{self.subset}" if self.subset else ""
        return f"{self.location}{sub}[{self.split}]"


def _local_file_in(directory: Path, spec: BenchmarkSpec) -> Path | None:
    for sub in (directory, directory / "eval"):
        for stem in spec.files:
            for suffix in LOCAL_SUFFIXES:
                path = sub / f"{stem}{suffix}"
                if path.is_file():
                    return path
    return None


def resolve_source(name: str, source: str | None = None, data_dir: str | os.PathLike | None = None) -> ResolvedSource:
    """Decide where benchmark ``name`` is read from (see the module docstring)."""
    spec = spec_for(name, [name] if source else ())
    if source:
        path = Path(source).expanduser()
        if path.is_dir():
            found = _local_file_in(path, spec)
            if found is None:
                raise BenchmarkError(f"{path}: no {spec.name} file in this directory (looked for "
                                     f"{', '.join(s + '.jsonl' for s in spec.files)} and .json/.parquet)")
            return ResolvedSource("local", str(found))
        if path.is_file() or source.endswith(LOCAL_SUFFIXES) or source.startswith((".", "/", "~")):
            if not path.is_file():
                raise BenchmarkError(f"{path}: no such file (source of {spec.name})")
            return ResolvedSource("local", str(path))
        if source == spec.hub_id:
            return ResolvedSource("hub", source, spec.hub_split, spec.hub_subset)
        return ResolvedSource("hub", source, "test", None)  # another copy: its test split
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        if not directory.is_dir():
            raise BenchmarkError(f"--data-dir {directory}: not a directory")
        found = _local_file_in(directory, spec)
        if found is not None:
            return ResolvedSource("local", str(found))
    if not spec.hub_id:
        raise BenchmarkError(f"{spec.name} has no public copy: give its file with --source {spec.name}=FILE "
                             f"or --data-dir DIR holding {spec.files[0]}.jsonl")
    return ResolvedSource("hub", spec.hub_id, spec.hub_split, spec.hub_subset)


# ----------------------------------------------------------------------------------------------
# Rows -> items
# ----------------------------------------------------------------------------------------------

_LEVEL_RE = re.compile(r"^\s*(?:level\s*)?(\d+)\s*$", re.IGNORECASE)


def _meta_value(key: str, value: Any) -> Any:
    value = plain(value)
    if key == "level" and isinstance(value, str):  # "Level 3" (MATH-lighteval) -> 3
        m = _LEVEL_RE.match(value)
        if m:
            return int(m.group(1))
    return value


def item_from_record(record: Record, spec: BenchmarkSpec, position: int) -> BenchmarkItem:
    """Normalise one source row; raises :class:`RowError` naming the row and field."""
    check_readable(record)
    question = question_of(record, spec.fields)
    gold = read_gold(record, spec.fields, spec.name)
    meta: dict[str, Any] = {"source": record.where}
    _, native = field_value(record.data, spec.native_id_fields)
    if native is not None:
        meta["native_id"] = plain(native)
    for key, names in spec.meta_fields:
        _, value = field_value(record.data, names)
        if value is not None:
            meta[key] = _meta_value(key, value)
    if len(gold.items) > 1:
        meta["gold_items"] = len(gold.items)
    return BenchmarkItem(f"{spec.name}-{position}", question, gold.normalized_text, meta)


@dataclass
class Benchmark:
    name: str
    source: ResolvedSource
    items: list[BenchmarkItem]
    rejected: list[RowError] = field(default_factory=list)

    @property
    def spec(self) -> BenchmarkSpec:
        return spec_for(self.name, [self.name])

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[BenchmarkItem]:
        return iter(self.items)


def _records(src: ResolvedSource) -> Iterator[Record]:
    if src.kind == "local":
        return read_records(src.location)
    try:
        return iter(list(read_records(src.location, split=src.split, subset=src.subset)))
    except SourceError:
        if src.split == "test":  # copies of small competitions often ship only a train split
            return read_records(src.location, split="train", subset=src.subset)
        raise


def load_benchmark(name: str, *, source: str | None = None, data_dir: str | os.PathLike | None = None,
                   limit: int | None = None, on_error: str = "raise") -> Benchmark:
    """Load one benchmark (see the module docstring for sources and gold rules).

    ``limit`` keeps the first ``limit`` items. ``on_error="raise"`` (default) stops at the first
    broken row with a :class:`RowError` (``file:row: field 'x': reason``); ``"skip"`` keeps
    going and lists the broken rows in ``Benchmark.rejected``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    spec = spec_for(name, [name] if source else ())
    src = resolve_source(spec.name, source, data_dir)
    items: list[BenchmarkItem] = []
    rejected: list[RowError] = []
    try:
        for record in _records(src):
            if limit is not None and len(items) >= limit:
                break
            try:
                items.append(item_from_record(record, spec, len(items)))
            except RowError as exc:
                if on_error == "raise":
                    raise
                rejected.append(exc)
    except SourceError as exc:
        hint = "" if src.kind == "local" else (f" Local copy: --data-dir DIR (holding {spec.files[0]}.jsonl) "
                                               f"or --source {spec.name}=FILE.")
        raise BenchmarkError(f"{spec.name}: {exc}{hint}") from exc
    if not items and not rejected and limit != 0:
        raise BenchmarkError(f"{spec.name}: {src.label} has no rows")
    return Benchmark(spec.name, src, items, rejected)


def load_benchmarks(names: Iterable[str], *, sources: dict[str, str] | None = None,
                    data_dir: str | os.PathLike | None = None, limit: int | None = None,
                    on_error: str = "raise") -> list[Benchmark]:
    """Load several benchmarks; ``sources`` maps a benchmark name to its own source."""
    user = list(sources or {})
    sources = {spec_for(k, user).name: v for k, v in (sources or {}).items()}
    return [load_benchmark(n, source=sources.get(spec_for(n, user).name), data_dir=data_dir, limit=limit,
                           on_error=on_error) for n in names]
