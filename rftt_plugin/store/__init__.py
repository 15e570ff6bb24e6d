"""Resumable outputs: the append-only journal and the run directory that ``rftt eval`` and
``rftt gen-sft`` resume from (fingerprint in run.json, a writer lock, journals)."""
