"""Pieces of ``rftt eval`` (the driver is :mod:`rftt_plugin.evaluate`).

``selection``  answer selection over search leaves, scores per rollout budget (pure)
``aggregate``  per-question scores -> per-benchmark tables and breakdowns (pure)
``store``      the run directory: config fingerprint, append-only records.jsonl, resume
``report``     results.json, results.md, accuracy_vs_rollouts.png
``runners``    one question in chain mode / tree mode -> one record
"""
