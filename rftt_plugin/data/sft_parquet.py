"""verl's SFT parquet: one row per conversation (``messages`` + audit columns), written atomically.

Phase 1 (:mod:`rftt_plugin.phase1.job`) and the CPU quickstart write their samples through here,
so verl's SFT trainer (``+recipe=rftt_sft``) reads one schema.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence


def sft_row(question: str, response: str, *, key: str = "", source: str = "", kind: str = "") -> dict[str, Any]:
    """One row of verl's SFT parquet (``messages`` + audit columns)."""
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": response}],
            "id": key, "source": source, "kind": kind}


def write_sft_parquet(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write verl SFT rows atomically (temporary file + rename). An empty list writes a valid,
    empty file with the same schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("messages", pa.list_(message)), ("id", pa.string()), ("source", pa.string()),
                        ("kind", pa.string())])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([dict(r) for r in rows], schema=schema)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path
