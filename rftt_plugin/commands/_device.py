"""``--device auto`` / ``--dtype auto`` for the commands that load a model in this process (hf backend).

auto = cuda + bfloat16 when a GPU is present, else cpu + float32 (resolved by
:meth:`rftt_plugin.jobs.model.ModelSpec.with_device`); the command prints what it chose.
"""

from __future__ import annotations

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_HELP = "hf: torch device: auto (cuda when a GPU is present, else cpu; the default), cpu, cuda, cuda:1"
DTYPE_HELP = "hf: weights dtype: auto (bfloat16 on a GPU, float32 on cpu; the default), float32, bfloat16, float16"


def add_device_flags(group) -> None:
    group.add_argument("--device", default="auto", help=DEVICE_HELP)
    group.add_argument("--dtype", default="auto", choices=DTYPES, help=DTYPE_HELP)
