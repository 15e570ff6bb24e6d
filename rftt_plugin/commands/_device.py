"""``--device auto`` / ``--dtype auto`` for the commands that load a model in this process (hf backend).

auto = cuda + bfloat16 when a GPU is present, else cpu + float32. The command prints what it chose.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_HELP = "hf: torch device: auto (cuda when a GPU is present, else cpu; the default), cpu, cuda, cuda:1"
DTYPE_HELP = "hf: weights dtype: auto (bfloat16 on a GPU, float32 on cpu; the default), float32, bfloat16, float16"


@dataclass(frozen=True)
class DeviceChoice:
    device: str
    dtype: str
    note: str          # why, for the one line the command prints


def choose_device(device: str, dtype: str, cuda_available: bool) -> DeviceChoice:
    """Resolve ``auto`` in either value; explicit values are kept as given."""
    notes = []
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
        notes.append("a GPU is present" if cuda_available else "no GPU found")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
        notes.append(f"dtype for {device.split(':')[0]}")
    return DeviceChoice(device, dtype, "auto: " + ", ".join(notes) if notes else "as given")


def add_device_flags(group) -> None:
    group.add_argument("--device", default="auto", help=DEVICE_HELP)
    group.add_argument("--dtype", default="auto", choices=DTYPES, help=DTYPE_HELP)


def resolve_device_flags(args, command: str) -> None:
    """Replace ``auto`` in ``args.device`` / ``args.dtype`` (before anything records the settings)
    and keep the line that says what was chosen in ``args.device_line``; :func:`announce_device`
    prints it when the model is loaded, so that a mistake caught earlier stays a one-line error.
    Only the hf backend loads a model in this process; for the others nothing is printed."""
    args.device_line = None
    if getattr(args, "backend", "hf") != "hf":
        return
    cuda = False
    if "auto" in (args.device, args.dtype):
        import torch

        cuda = torch.cuda.is_available()
    choice = choose_device(args.device, args.dtype, cuda)
    args.device, args.dtype = choice.device, choice.dtype
    args.device_line = f"rftt {command}: device {choice.device}, dtype {choice.dtype} ({choice.note})"


def announce_device(args) -> None:
    """Print the line of :func:`resolve_device_flags` (once)."""
    line = getattr(args, "device_line", None)
    if line:
        print(line, file=sys.stderr)
        args.device_line = None
