"""``rftt eval``: pass@1 (chain) and test-time scaling (tree), resumable.

``job``        the driver: config, backend, questions -> records -> results

``selection``  answer selection over search leaves, scores per rollout budget (pure)
``aggregate``  per-question scores -> per-benchmark tables and breakdowns (pure)
``report``     results.json, results.md, accuracy_vs_rollouts.png
``runners``    one question in chain mode / tree mode -> one record
"""
