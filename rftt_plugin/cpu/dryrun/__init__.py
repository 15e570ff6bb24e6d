"""CPU dry run of a verl recipe: overlay-aware launcher, tiny model clones, demo assets, report.

The Hydra overlay itself is ``rftt_plugin/config/dryrun/cpu.yaml`` (``+dryrun=cpu``); the CLI is
``rftt dry-run`` (``rftt_plugin/commands/dry_run.py``).
"""
