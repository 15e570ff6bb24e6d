"""LLM backends behind one async protocol (see ``base``). No verl imports here.

``fake`` (scripted, tests/benchmarks), ``hf`` (transformers, CPU/GPU), ``openai`` (an
OpenAI-compatible ``/v1/completions`` server such as ``vllm serve``); ``engine`` builds the one a
command asks for. ``decode`` and ``batcher`` are the generation loop and micro-batcher that the hf
backend shares with hfcpu (``rftt_plugin.cpu.hfcpu``). Heavy modules are imported on direct import
only.
"""

from rftt_plugin.backends.base import FINISH_REASONS, Backend, BaseBackend, Generation, SamplingParams

__all__ = ["FINISH_REASONS", "Backend", "BaseBackend", "Generation", "SamplingParams"]
