"""LLM backends behind one async protocol (see ``base``). No verl imports here.

``fake`` (scripted, tests/benchmarks), ``hf`` (transformers, CPU/GPU), ``openai`` (an
OpenAI-compatible ``/v1/completions`` server such as ``vllm serve``). Heavy modules are
imported only by :func:`make_backend` / on direct import.
"""

from rftt_plugin.backends.base import FINISH_REASONS, Backend, BaseBackend, Generation, SamplingParams

__all__ = ["FINISH_REASONS", "Backend", "BaseBackend", "Generation", "SamplingParams", "make_backend"]


def make_backend(kind: str, **kwargs):
    """Build a backend by name: ``fake``, ``hf`` (``model=path``) or ``openai`` (``base_url=``)."""
    if kind == "fake":
        from rftt_plugin.backends.fake import FakeBackend
        return FakeBackend(**kwargs)
    if kind == "hf":
        from rftt_plugin.backends.hf import HFBackend
        model = kwargs.pop("model")
        return HFBackend.from_pretrained(model, **kwargs) if isinstance(model, str) else HFBackend(model, **kwargs)
    if kind == "openai":
        from rftt_plugin.backends.openai import OpenAIBackend
        return OpenAIBackend(**kwargs)
    raise ValueError(f"unknown backend {kind!r}; choose fake, hf or openai")
