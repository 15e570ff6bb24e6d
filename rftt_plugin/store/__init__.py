"""Resumable outputs: the append-only journal and the run directory that ``rftt eval``,
``rftt gen-sft`` and ``rftt search`` resume from (fingerprint in run.json, a writer lock, journals)."""
