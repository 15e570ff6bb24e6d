"""What rftt-plugin adds to ``import verl`` (it is paid by every verl process: driver, Ray actors...).

Each sample is a fresh interpreter that times ``import verl`` with the plugin enabled
(``VERL_USE_EXTERNAL_PLUGINS=auto``, the default) or disabled (``none``). The two variants are
interleaved so drifting machine load hits both alike. Two in-process numbers, immune to the
noise of a shared machine, isolate the plugin: loading the ``rftt`` entry point on top of an
already imported verl, and ``rftt_plugin.cpu.install()`` alone.

    python bench/import_cost.py [--reps 10]

Target (issue 7): the plugin adds at most +0.5 s (median).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

TARGET_S = 0.5

_IMPORT_VERL = "import time; t = time.perf_counter(); import verl; print(time.perf_counter() - t)"
_PLUGIN_LOAD = (
    "import time, verl; from importlib.metadata import entry_points; "
    "eps = [e for e in entry_points(group='verl.plugins') if e.name == 'rftt']; "
    "t = time.perf_counter(); [e.load() for e in eps]; print(time.perf_counter() - t)"
)
_CPU_INSTALL = (
    "import time, verl; from rftt_plugin.cpu.state import STATE; "
    "t = time.perf_counter(); import rftt_plugin.cpu as c; STATE.installed = False; c.install(); "
    "print(time.perf_counter() - t)"
)


def sample(code: str, plugins: str) -> float:
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": plugins, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "mean": statistics.fmean(values), "min": min(values),
            "max": max(values), "n": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    sample(_IMPORT_VERL, "none")  # warm the OS file cache so the first variant is not penalised
    without, with_plugin = [], []
    for _ in range(args.reps):
        without.append(sample(_IMPORT_VERL, "none"))
        with_plugin.append(sample(_IMPORT_VERL, "auto"))
    plugin_load = [sample(_PLUGIN_LOAD, "none") for _ in range(args.reps)]
    cpu_install = [sample(_CPU_INSTALL, "none") for _ in range(args.reps)]

    result = {
        "import verl, plugins disabled (s)": summarize(without),
        "import verl, rftt-plugin enabled (s)": summarize(with_plugin),
        "delta median (s)": statistics.median(with_plugin) - statistics.median(without),
        "delta mean (s)": statistics.fmean(with_plugin) - statistics.fmean(without),
        "delta min (s)": min(with_plugin) - min(without),
        "rftt entry point load alone, in-process (s)": summarize(plugin_load),
        "rftt_plugin.cpu.install() alone, in-process (s)": summarize(cpu_install),
        "target (s)": TARGET_S,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            if isinstance(value, dict):
                print(f"{key:48s} median {value['median']:.3f}  mean {value['mean']:.3f}  "
                      f"min {value['min']:.3f}  max {value['max']:.3f}  (n={value['n']})")
            else:
                print(f"{key:48s} {value:+.3f}" if "delta" in key else f"{key:48s} {value}")
    ok = result["delta median (s)"] <= TARGET_S
    print(("OK" if ok else "OVER TARGET") + f": plugin adds {result['delta median (s)']:+.3f} s (median), target <= {TARGET_S} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
