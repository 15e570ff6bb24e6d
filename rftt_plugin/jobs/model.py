"""The model a job runs on: :class:`ModelSpec` (what identifies it + how it is loaded), its run
fingerprint, the ``--device auto`` choice, and :class:`EngineHandle`, the one place that builds
an engine (:func:`rftt_plugin.backends.engine.make_engine`) for ``rftt search``, ``rftt gen-sft``
and ``rftt eval``.

The fingerprint (:meth:`ModelSpec.fingerprint`) is the model half of every resumable run's
``run.json``: a run refuses to continue on other weights or another tokenizer. Only what decides
the outputs is in it (backend, model, tokenizer, served name, the hf dtype, file contents); how
fast it runs (device, batch sizes) is not.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from typing import Any

from rftt_plugin.errors import UserError

BACKENDS = ("fake", "hf", "openai")


@dataclass(frozen=True)
class DeviceChoice:
    device: str
    dtype: str
    note: str          # why, for the one line the command prints


def choose_device(device: str, dtype: str, cuda_available: bool) -> DeviceChoice:
    """Resolve ``auto`` in either value (cuda + bfloat16 with a GPU, else cpu + float32); explicit
    values are kept as given."""
    notes = []
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
        notes.append("a GPU is present" if cuda_available else "no GPU found")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
        notes.append(f"dtype for {device.split(':')[0]}")
    return DeviceChoice(device, dtype, "auto: " + ", ".join(notes) if notes else "as given")


@dataclass(frozen=True)
class ModelSpec:
    """Everything that names the model of a run and how to load it (the parsed ``--model`` flags)."""

    backend: str                         # fake | hf | openai
    model: str | None = None             # checkpoint dir / hub id (hf); the served model's tokenizer (openai)
    tokenizer: str | None = None         # chat template + decoding, when not the model's own
    base_url: str | None = None          # openai: e.g. http://localhost:8000/v1
    served_model: str | None = None      # openai: the name the server knows (default: model)
    api_key: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    tag_readout: str | None = None       # openai: how tag probabilities are read (None: the backend's default)
    token_mode: str | None = None        # functional-token layout of the engine; None: a plain chat model
    max_batch_size: int = 8
    max_concurrency: int = 16
    seed: int = 0
    device_line: str | None = None       # what --device/--dtype auto chose; printed when the model loads

    # -- cheap checks ------------------------------------------------------------------------------
    def check(self) -> None:
        """The flags and paths of the model, before anything is loaded (see :mod:`rftt_plugin.jobs.checks`)."""
        from rftt_plugin.jobs.checks import check_model

        if self.backend == "fake":
            return
        if not self.model:
            raise UserError(f"--model is required with --backend {self.backend}",
                            "pass a checkpoint directory (hf) or the served model's tokenizer (openai)")
        if self.backend == "openai" and not self.base_url:
            raise UserError("--base-url is required with --backend openai", "e.g. --base-url http://localhost:8000/v1")
        if self.backend == "hf":
            check_model(self.model)
            check_model(self.tokenizer, "--tokenizer", tokenizer_only=True)
        else:  # the model runs elsewhere: only its tokenizer is read here
            check_model(self.tokenizer or self.model, "--tokenizer" if self.tokenizer else "--model",
                        tokenizer_only=True)

    def with_device(self, command: str) -> "ModelSpec":
        """``auto`` in device/dtype resolved (before anything records the settings), with the line
        saying what was chosen. Only the hf backend loads a model in this process."""
        if self.backend != "hf":
            return replace(self, device_line=None)
        cuda = False
        if "auto" in (self.device, self.dtype):
            import torch

            cuda = torch.cuda.is_available()
        choice = choose_device(self.device, self.dtype, cuda)
        return replace(self, device=choice.device, dtype=choice.dtype,
                       device_line=f"rftt {command}: device {choice.device}, dtype {choice.dtype} ({choice.note})")

    # -- the run fingerprint -----------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """The model half of a run's fingerprint: names AND file contents (rftt_plugin.fingerprint
        says how large files are sampled), so overwritten weights at the same path do not resume.
        A served model's weights cannot be read: its name is recorded, its tokenizer files are."""
        from rftt_plugin.fingerprint import model_fingerprint

        model = self.model
        if model and os.path.isdir(os.path.expanduser(model)):
            model = os.path.abspath(os.path.expanduser(model))
        fp: dict[str, Any] = {"backend": self.backend, "model": model, "served_model": self.served_model,
                              "tokenizer": self.tokenizer, "dtype": self.dtype if self.backend == "hf" else None,
                              "weights": model_fingerprint(self.model) if self.backend == "hf" else None}
        if self.backend != "fake" and (self.tokenizer or self.backend != "hf"):  # hf alone: covered by weights
            fp["tokenizer_files"] = model_fingerprint(self.tokenizer or self.model)
        return fp

    def run_fingerprint(self, **settings: Any) -> dict[str, Any]:
        """THE run fingerprint of a resumable output: the model's and the job's ``settings``."""
        return {**self.fingerprint(), **settings}


class EngineHandle:
    """The engine of a run, built on first :meth:`get` and only then: a resumed run with nothing
    left to do loads no model. The one call of ``make_engine`` for the three jobs."""

    def __init__(self, spec: ModelSpec, hint: str = "check --model, --tokenizer, --base-url, --dtype and --device"):
        self.spec = spec
        self.hint = hint
        self._engine = None

    @property
    def built(self) -> bool:
        return self._engine is not None

    def get(self, *, tokenizer: Any = None, script: Any = None, with_tokenizer: bool = True):
        """The :class:`~rftt_plugin.backends.engine.Engine`; ``tokenizer`` / ``script``: parts a
        job already loaded in its checks (prompt lengths), so they are not loaded twice."""
        if self._engine is None:
            from rftt_plugin.backends.engine import EngineError, make_engine

            s = self.spec
            if s.device_line:
                print(s.device_line, file=sys.stderr)
            try:
                self._engine = make_engine(
                    s.backend, s.model, tokenizer=tokenizer if tokenizer is not None else s.tokenizer,
                    token_mode=s.token_mode, base_url=s.base_url, served_model=s.served_model, api_key=s.api_key,
                    device=s.device, dtype=s.dtype, max_batch_size=s.max_batch_size,
                    max_concurrency=s.max_concurrency, seed=s.seed, logprob_method=s.tag_readout, script=script,
                    with_tokenizer=with_tokenizer)
            except EngineError as exc:
                raise UserError(str(exc), exc.hint or self.hint) from None
        return self._engine

    async def aclose(self) -> None:
        """Close the backend, if one was built."""
        if self._engine is not None:
            aclose = getattr(self._engine.backend, "aclose", None)
            if aclose is not None:
                await aclose()
