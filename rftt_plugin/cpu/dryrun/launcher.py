"""Run a recipe's main_ppo unchanged on CPU for a few steps and say whether it works.

Steps: resolve the model (a tiny random clone of the recipe's model with its real tokenizer, or the
demo's tiny model), compose ``<recipe overrides> +dryrun=cpu <overlay re-applied> <launcher
choices>``, run ``python -m verl.trainer.main_ppo`` as a child with a private ``RAY_TMPDIR`` and a
hard timeout, then parse verl's console metrics and hfcpu's weight events into a report.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TextIO

from rftt_plugin.cpu.dryrun import overrides as ov
from rftt_plugin.cpu.dryrun.process import RunResult, run_logged
from rftt_plugin.cpu.dryrun.report import (
    Verdict,
    judge,
    loads_by_replica,
    parse_step_metrics,
    read_events,
    timing_table,
)

ENV_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}
_ECHO_MARKERS = ("Traceback", "Error", "Exception", "[hfcpu]", "Training Progress")
_SUMMARY_KEYS = (("actor/grad_norm", "grad_norm"), ("critic/score/mean", "score"),
                 ("critic/advantages/max", "adv_max"), ("timing_s/step", "step_s"))


def echo_line(line: str) -> Optional[str]:
    """What the launcher shows of main_ppo's output when not verbose (everything is in the log)."""
    steps = parse_step_metrics([line])
    if steps:
        (step, metrics), = steps.items()
        parts = [f"{label}={metrics[key]:.4g}" for key, label in _SUMMARY_KEYS if key in metrics]
        return f"[rftt dry-run] step {step}: " + " ".join(parts) + "\n"
    if "Warning" in line or "warnings.warn" in line:
        return None
    return line if any(m in line for m in _ECHO_MARKERS) else None


@dataclass
class DryRunOptions:
    overrides: list[str] = field(default_factory=list)
    model: Optional[str] = None  # shrink this model (local path or cached hub id)
    keep_model: bool = False  # use the recipe's model as is (already small)
    steps: int = 2
    gpus: int = 1  # logical GPUs = FSDP ranks
    demo: bool = False
    workdir: Optional[Path] = None
    timeout_s: float = 900.0
    verbose: bool = False
    python: str = sys.executable


@dataclass
class DryRunReport:
    command: list[str]
    result: RunResult
    steps: dict[int, dict[str, float]]
    events: list[dict]
    verdict: Verdict
    replaced: list[tuple[str, str, str]]
    model_note: str


def _model_overrides(opts: DryRunOptions, user: dict[str, str]) -> tuple[dict[str, str], str]:
    """Launcher-chosen model paths, and a sentence for the report."""
    from rftt_plugin.cpu.dryrun.tiny_clone import tiny_clone

    source = opts.model or user.get("actor_rollout_ref.model.path")
    if not source:
        raise SystemExit("rftt dry-run: no model. Pass --model PATH_OR_ID, an actor_rollout_ref.model.path=... "
                         "override, or --demo.")
    if opts.keep_model:
        return ({"actor_rollout_ref.model.path": source} if opts.model else {}), f"model used as is: {source}"
    clones: dict[str, str] = {}
    chosen = {}
    for key in ov.MODEL_PATH_KEYS:
        src = source if key == "actor_rollout_ref.model.path" else user.get(key)
        if src:
            clones.setdefault(src, str(tiny_clone(src)))
            chosen[key] = clones[src]
    return chosen, "tiny random clone(s) with the real tokenizer: " + ", ".join(f"{s} -> {c}" for s, c in clones.items())


def prepare(opts: DryRunOptions) -> tuple[list[str], dict[str, str], Path, list[tuple[str, str, str]], str]:
    """Return (command, env, workdir, replaced overrides, model note) without running anything."""
    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="rftt-dryrun-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    user_args = list(opts.overrides)
    if opts.demo:
        from rftt_plugin.cpu.dryrun.demo import build_demo_assets, demo_overrides

        user_args = demo_overrides(build_demo_assets(workdir / "demo")) + user_args
        opts.keep_model = True
    user = ov.user_values(user_args)
    enforced, model_note = _model_overrides(opts, user)
    enforced.update({
        "trainer.total_training_steps": str(opts.steps),
        "trainer.n_gpus_per_node": str(opts.gpus),
        "actor_rollout_ref.rollout.engine_kwargs.hfcpu.event_log": str(workdir / "hfcpu_events.jsonl"),
        "hydra.run.dir": str(workdir / "hydra"),
    })
    composed = ov.compose(user_args, enforced)
    command = [opts.python, "-m", "verl.trainer.main_ppo", *composed.args]
    env = {**ENV_DEFAULTS, **os.environ}
    # Short private Ray dir: AF_UNIX socket paths must stay under ~107 bytes, and cleanup finds our processes by it.
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rftt-ray-", dir="/tmp")
    return command, env, workdir, composed.replaced, model_note


def run_dry_run(opts: DryRunOptions, out: TextIO = sys.stdout) -> DryRunReport:
    command, env, workdir, replaced, model_note = prepare(opts)
    events_path = workdir / "hfcpu_events.jsonl"
    if events_path.exists():
        events_path.unlink()
    print(f"[rftt dry-run] workdir {workdir}\n[rftt dry-run] {model_note}", file=out)
    for key, mine, theirs in replaced:
        print(f"[rftt dry-run] overlay replaces {key}={mine} with {theirs}", file=out)
    print("[rftt dry-run] " + " ".join(command), file=out, flush=True)
    echo = (lambda line: line) if opts.verbose else echo_line
    result = run_logged(command, env, workdir / "main_ppo.log", opts.timeout_s, marker=env["RAY_TMPDIR"],
                        echo=echo, out=out)
    if result.returncode == 0:  # keep Ray's session logs only when they may explain a failure
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    else:
        print(f"[rftt dry-run] Ray session logs kept in {env['RAY_TMPDIR']}", file=out)
    steps = parse_step_metrics(result.lines)
    events = read_events(events_path)
    verdict = judge(result.returncode, steps, opts.steps, events, timed_out=result.timed_out)
    return DryRunReport(command, result, steps, events, verdict, replaced, model_note)


def format_report(report: DryRunReport) -> str:
    r, v = report.result, report.verdict
    syncs = "; ".join(
        f"replica {replica}: " + ", ".join(f"v{e['version']}@step{e['global_steps']}:{e['digest']}" for e in loads)
        for replica, loads in sorted(loads_by_replica(report.events).items())
    )
    lines = [
        "",
        "=" * 72,
        "rftt dry-run report",
        "-" * 72,
        timing_table(report.steps),
        "-" * 72,
        f"wall time {r.wall_s:.1f} s, peak RSS of the whole process tree {r.peak_tree_rss_mb:.0f} MiB "
        f"(shared pages counted per process: an upper bound)",
        "rollout weight syncs (version@trainer step:digest): " + (syncs or "none recorded"),
        f"log: {r.log_path}",
    ]
    if r.leftovers_killed:
        lines.append(f"cleaned up {r.leftovers_killed} leftover process(es) of this run")
    lines += [f"warning: {w}" for w in v.warnings]
    lines += [f"FAIL: {f}" for f in v.failures]
    lines.append(("PASS" if v.passed else "FAIL") + f": {len(report.steps)} step(s) on CPU")
    lines.append("=" * 72)
    return "\n".join(lines)
