"""One builder for what every model-driven command needs: (backend, tokenizer, tag ids).

``rftt search``, ``rftt eval`` and ``rftt gen-sft`` (and the quickstart) all call
:func:`make_engine`; the choices that used to be repeated in each of them live here once: where the
tokenizer comes from (``tokenizer`` or the model), the chat-template check, out-of-vocabulary ids
for OpenAI-compatible servers, the tag ids, and how a question becomes prompt ids. Failures raise
:class:`EngineError`, one line naming the setting (``--model``, ``--tokenizer``, ``--base-url``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rftt_plugin.chat_prompt import chat_prompt_ids
from rftt_plugin.tag_ids import TagIds, TagVocabularyError

KINDS = ("fake", "hf", "openai")


class EngineError(ValueError):
    """The model, tokenizer or server named by the user cannot be used; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint

    def with_hint(self) -> str:
        """The message and the hint on one line (for callers without a separate hint field)."""
        return f"{self}; {self.hint}" if self.hint else str(self)


@dataclass
class Engine:
    backend: Any                 # rftt_plugin.backends.base.Backend
    tokenizer: Any               # a transformers tokenizer (None for the fake backend)
    tag_ids: TagIds | None       # None when not asked for (token_mode=None)
    fake_grade: Any = None       # the fake backend's scripted grader (tests, demos)
    fake_prompt: Any = None      # the fake vocabulary's prompt builder (question -> ids)

    @property
    def layout(self) -> TagIds | None:
        """The tag ids under their pre-#30 name (the search's token layout), for the callers."""
        return self.tag_ids

    def prompt_ids(self, question: str) -> list[int]:
        """The prompt ids the search gets for ``question``: the chat template of the tokenizer
        (the fake backend: its vocabulary's look-alike)."""
        if self.fake_prompt is not None:
            return list(self.fake_prompt(question))
        if self.tokenizer is None:
            raise EngineError("this engine was built without a tokenizer (with_tokenizer=False); "
                              "build prompt ids with rftt_plugin.chat_prompt.chat_prompt_ids")
        return chat_prompt_ids(self.tokenizer, question)

    @property
    def eos_ids(self) -> list[int]:
        ids = getattr(self.backend, "eos_ids", None)
        if ids:
            return list(ids)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return [eos] if eos is not None else []


def load_tokenizer(name: str, *, flag: str = "--model", need_chat_template: bool = True):
    """A Hugging Face tokenizer, with a one-line error naming ``flag`` when it cannot be used."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - e.g. a hub id offline, a folder without tokenizer files
        raise EngineError(f"{flag} {name}: cannot load the tokenizer ({type(exc).__name__}: {exc})",
                          "pass a local checkpoint directory with its tokenizer files") from None
    if need_chat_template and not getattr(tokenizer, "chat_template", None):
        raise EngineError(f"{flag} {name}: the tokenizer has no chat template (the question is sent as the user "
                          "turn of it); use a chat/instruct checkpoint, or set chat_template in tokenizer_config.json")
    return tokenizer


def make_tag_ids(tokenizer: Any, token_mode: str = "added") -> TagIds:
    """The tag ids of ``tokenizer`` (raises EngineError when the tags are missing)."""
    try:
        return TagIds.from_tokenizer(tokenizer, mode=token_mode)
    except TagVocabularyError as exc:
        raise EngineError(str(exc), "run `rftt prepare-model` first, or use token mode text") from None


def make_engine(kind: str, model: str | None = None, *, tokenizer: Any = None, token_mode: str | None = "added",
                base_url: str | None = None, served_model: str | None = None, api_key: str | None = None,
                device: str = "cpu", dtype: str = "float32", max_batch_size: int = 8, max_concurrency: int = 16,
                seed: int = 0, logprob_method: str | None = None, script: Any = None,
                with_tokenizer: bool = True) -> Engine:
    """Build the engine for backend ``kind`` (``fake``, ``hf``, ``openai``).

    ``model`` is a checkpoint directory or hub id (hf), or the served model's tokenizer source
    (openai; ``served_model`` is the name the server knows). ``tokenizer`` overrides where the
    tokenizer comes from: a name or folder, or an already loaded tokenizer (a caller that checked
    prompt lengths before paying for the model load). ``token_mode=None`` skips the tag ids (phase 1 talks to the model
    as a plain chat model). ``script`` is the fake backend's :class:`~rftt_plugin.backends.fake.TagScript`.
    ``with_tokenizer=False`` builds the backend alone (a caller that already holds the tag ids).
    """
    if kind not in KINDS:
        raise EngineError(f"unknown backend {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "fake":
        from rftt_plugin.backends.fake import FakeBackend, TagScript

        script = script or TagScript()
        tag_ids = TagIds.from_fake(script.vocab, token_mode) if token_mode else None
        return Engine(FakeBackend.for_script(script), None, tag_ids, script.grade, script.vocab.prompt_ids)
    if not model:
        raise EngineError(f"--model is required with --backend {kind}")
    tok = tag_ids = None
    if with_tokenizer:
        if tokenizer is not None and not isinstance(tokenizer, str):
            tok = tokenizer
        else:
            tok = load_tokenizer(tokenizer or model, flag="--tokenizer" if tokenizer else "--model")
        tag_ids = make_tag_ids(tok, token_mode) if token_mode else None
    if kind == "hf":
        from rftt_plugin.backends.hf import HFBackend

        try:
            backend = HFBackend.from_pretrained(model, device=device, dtype=dtype, max_batch_size=max_batch_size,
                                                seed=seed)
        except Exception as exc:  # noqa: BLE001 - missing weights, bad dtype/device
            raise EngineError(f"--model {model}: cannot load the model ({type(exc).__name__}: {exc}); "
                              "check the checkpoint files, --dtype and --device") from None
        return Engine(backend, tok, tag_ids)
    if not base_url:
        raise EngineError("--base-url is required with --backend openai (e.g. http://localhost:8000/v1)")
    from rftt_plugin.backends.openai import OpenAIBackend, out_of_vocab_ids_at

    try:  # padded embedding rows: keep a plain `vllm serve` from sampling ids the tokenizer lacks
        banned = out_of_vocab_ids_at(model)
    except (OSError, ValueError):  # ``model`` holds a tokenizer only: nothing to compare against
        banned = []
    extra = {"logprob_method": logprob_method} if logprob_method else {}
    backend = OpenAIBackend(base_url, served_model or model, api_key=api_key, max_concurrency=max_concurrency,
                            banned_ids=banned, **extra)
    return Engine(backend, tok, tag_ids)
