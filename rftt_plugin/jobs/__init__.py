"""The one shape of the model-driven jobs (``rftt search``, ``rftt gen-sft``, ``rftt eval``).

A command parses its flags into a job and then does three things, in this order::

    job = SearchRun(ModelSpec(...), ...)      # parse: values only, nothing read yet
    job.check()                               # every cheap check in one pass: flags, paths, input
                                              # rows, the run directory, prompt lengths
    return job.run(EngineHandle(job.model))   # the engine is built once, when work is left

* :class:`~rftt_plugin.jobs.model.ModelSpec` names the model (and how to load it) and builds the
  model half of the run fingerprint;
* :class:`~rftt_plugin.jobs.model.EngineHandle` builds the engine on first use, so a resumed run
  with nothing left to do loads no model;
* the run directory is :class:`rftt_plugin.store.run_dir.RunDir` (run.json + journals + lock):
  every job resumes where it stopped and refuses to mix two configurations.

Implementations: :class:`rftt_plugin.jobs.search.SearchRun`, :class:`rftt_plugin.phase1.job.GenSftRun`,
:class:`rftt_plugin.evaluation.job.EvalRun`.
"""

from __future__ import annotations

from typing import Any, Protocol

from rftt_plugin.jobs.model import EngineHandle, ModelSpec

__all__ = ["EngineHandle", "Job", "ModelSpec"]


class Job(Protocol):
    model: ModelSpec

    def check(self) -> None:
        """Raise a UserError naming the file/row/field of the first problem; load no model."""

    def run(self, engine: EngineHandle) -> Any:
        """Do (or resume) the work: the exit status (search, gen-sft) or the result the command
        prints (eval's :class:`~rftt_plugin.evaluation.job.EvalResult`)."""
