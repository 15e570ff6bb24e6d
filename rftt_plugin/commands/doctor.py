"""``rftt doctor``: check the plugin in a fresh driver process and inside a local Ray actor."""

from __future__ import annotations

import json
import os
import subprocess
import sys

FRESH_TIMEOUT_S = 300


def add_arguments(parser) -> None:
    parser.description = (
        "Check that rftt-plugin is wired into verl here: the plugin loads on `import verl`, every recipe "
        "resolves through +recipe=NAME, the estimators and agent loops the recipes name are registered, the "
        "reward function imports by its pkg:// path, the grader works, and (with --model) the functional "
        "tokens are in the checkpoint. Runs in a fresh Python process and inside one local Ray actor, "
        "prints a table with versions and a fix for every failed row, and exits 1 on any failure."
    )
    parser.add_argument("--model", help="also check the functional tokens of this checkpoint (path or id)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray-actor pass (faster)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    parser.add_argument("--config", nargs="+", metavar="OVERRIDE",
                        help="only check a composed config, as main_ppo would compose it from these overrides "
                             "(e.g. --config +recipe=rftt rftt.search.uct_c=3): the typed rftt: schema and the "
                             "cross-checks that main_ppo runs before Ray starts; prints one line, exit 2 on a problem")


def _fresh_process(model: str | None) -> dict:
    cmd = [sys.executable, "-m", "rftt_plugin.integration.wiring_checks", "--json"] + (["--model", model] if model else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FRESH_TIMEOUT_S)
    for line in proc.stdout.splitlines():
        if line.startswith("RFTT_DOCTOR_JSON "):
            return json.loads(line.split(" ", 1)[1])
    return {"checks": [{"name": "doctor subprocess", "ok": False, "detail": (proc.stderr or proc.stdout)[-800:],
                        "fix": "run `python -m rftt_plugin.integration.wiring_checks --json` to see the error"}],
            "versions": {}}


def _ray_actor(model: str | None) -> dict:
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    try:
        @ray.remote(num_cpus=1)
        def _checks(model_arg):
            from rftt_plugin.integration.wiring_checks import _payload

            return _payload(model_arg)

        return ray.get(_checks.remote(model), timeout=FRESH_TIMEOUT_S)
    except Exception as exc:
        return {"checks": [{"name": "Ray actor", "ok": False, "detail": f"{type(exc).__name__}: {exc}",
                            "fix": "check `ray status`; the plugin must be installed in the workers' Python"}],
                "versions": {}}
    finally:
        if started:
            ray.shutdown()


def _check_prm(overrides: list[str]) -> str | None:
    """With a PRM reward rule: one real scoring call (an in-process model is loaded for it)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from rftt_plugin.config.schema import check_composed_config
    from rftt_plugin.reward.prm import PRMError, preflight

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        settings = check_composed_config(compose(config_name="ppo_trainer", overrides=list(overrides)))
    reward = getattr(settings, "reward", None)
    if reward is None or not reward.needs_prm:
        return None
    try:
        return preflight(reward.prm, load_model=True)
    except PRMError as exc:
        return f"PRM problem: {exc}"


def _print_table(rows: list[tuple[str, dict]], vers: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, int(os.environ.get("COLUMNS", 120))))
    table = Table(title="rftt doctor", show_lines=False)
    for col in ("where", "check", "result", "detail / fix"):
        table.add_column(col, overflow="fold")
    for where, c in rows:
        mark = {True: "[green]ok[/]", False: "[red]FAIL[/]", None: "[blue]info[/]"}[c["ok"]]
        text = c["detail"] if c["ok"] is not False else f"{c['detail']}\n[yellow]fix:[/] {c['fix']}"
        table.add_row(where, c["name"], mark, text)
    console.print(table)
    vt = Table(title="versions")
    vt.add_column("package")
    vt.add_column("version")
    for k, v in vers.items():
        vt.add_row(k, v)
    console.print(vt)


def run(args) -> int:
    if args.config:
        from rftt_plugin.integration.wiring_checks import check_config

        ok, line = check_config(args.config)
        print(line)
        if ok:
            prm_line = _check_prm(args.config)
            if prm_line is not None:
                ok = not prm_line.startswith("PRM problem: ")
                print(prm_line)
        return 0 if ok else 2
    results = [("driver", _fresh_process(args.model))]
    if not args.no_ray:
        results.append(("ray actor", _ray_actor(args.model)))
    rows = [(where, c) for where, payload in results for c in payload["checks"]]
    vers = results[0][1].get("versions", {})
    failed = [c for _, c in rows if c["ok"] is False]
    if args.json:
        print(json.dumps({"rows": [{"where": w, **c} for w, c in rows], "versions": vers, "failed": len(failed)}))
    else:
        _print_table(rows, vers)
        print(f"{len(failed)} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0
