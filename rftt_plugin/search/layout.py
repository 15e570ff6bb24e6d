"""Which token ids the search inserts, and how a question becomes prompt ids.

The search works on token ids only. A :class:`TokenLayout` tells it:

* ``prompt_ids(question)``: the model's chat template with the question as the user turn and
  ``add_generation_prompt=True`` -- the same ids the trainer sees (the reference implementation
  conditions on the raw question text instead);
* per tag, the ids that *open* a step (``<tag>`` then the newline) and the ids of the closing tag;
* the ids inserted after a closing tag (the newline) and the EOS id appended after ``<output>``;
* what generation stops on: in ``added`` mode the single ids of all 16 tags (a closing tag ends
  the step; an opening tag inside a step is an error, so it stops there too); in ``text`` mode
  the eight closing-tag strings;
* ``decode`` (for grading and display only: nothing decoded is ever encoded again).

In ``text`` mode the opening segment is the tokenisation of ``"<tag>\\n"`` as it appears in
running text (after a newline), so the model sees the same pieces it would write itself.

Building a layout from a tokenizer is the only place that touches one; tests and benchmarks
build layouts over the fake vocabulary with :meth:`TokenLayout.from_fake`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from rftt_plugin.tokens import CLOSE_STRINGS, TAGS, FunctionalTag, TagVocabulary, tag_piece_ids


def chat_prompt_ids(tokenizer: Any, question: str) -> list[int]:
    """Chat-template ids for ``question`` as the single user turn, generation prompt added."""
    out = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                        add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding (a dict); older versions a plain list.
    if isinstance(out, Mapping) or hasattr(out, "keys"):
        out = out["input_ids"]
    if out and isinstance(out[0], (list, tuple)):
        out = out[0]
    return [int(t) for t in out]


@dataclass(frozen=True)
class TokenLayout:
    mode: str
    open_segments: Mapping[FunctionalTag, tuple[int, ...]]
    close_ids: Mapping[FunctionalTag, tuple[int, ...]]
    after_close_ids: tuple[int, ...]
    eos_id: int
    decode: Callable[[Sequence[int]], str]
    prompt_fn: Callable[[str], list[int]]

    def __post_init__(self) -> None:
        missing = [t.value for t in TAGS if t not in self.open_segments or t not in self.close_ids]
        if missing:
            raise ValueError(f"layout lacks ids for tags {missing}")
        if self.mode == "added":
            bad = [t.value for t in TAGS if len(self.close_ids[t]) != 1]
            if bad:
                raise ValueError(f"added mode needs single-id closing tags; not single: {bad}")

    # -- what the search asks --------------------------------------------------------------------
    def prompt_ids(self, question: str) -> list[int]:
        return list(self.prompt_fn(question))

    def open_id(self, tag: FunctionalTag) -> int:
        """The single opening-tag id (added mode)."""
        return self.open_segments[tag][0]

    def ranking_candidate(self, tag: FunctionalTag) -> list[int]:
        """What the tag ranking scores: the opening id (added) or the whole opening segment (text)."""
        return [self.open_id(tag)] if self.mode == "added" else list(self.open_segments[tag])

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        if self.mode != "added":
            return ()
        return tuple(self.close_ids[t][0] for t in TAGS) + tuple(self.open_id(t) for t in TAGS)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return () if self.mode == "added" else CLOSE_STRINGS

    def tag_of_id(self, token_id: int) -> tuple[FunctionalTag, bool] | None:
        """(tag, is_closing) for a single tag id (added mode), else None."""
        for tag in TAGS:
            if self.close_ids[tag] == (token_id,):
                return tag, True
            if self.mode == "added" and self.open_id(tag) == token_id:
                return tag, False
        return None

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_tokenizer(cls, tokenizer: Any, mode: str = "added", eos_id: int | None = None) -> "TokenLayout":
        """Read the tag ids from a Hugging Face tokenizer (``added`` needs a prepared model)."""
        vocab = TagVocabulary.from_tokenizer(tokenizer, mode=mode)
        if mode == "added":
            opens = {t: vocab.open_ids[t] + vocab.newline_ids for t in TAGS}
        else:
            opens = {t: tag_piece_ids(tokenizer, t.open + "\n") for t in TAGS}
        eos = tokenizer.eos_token_id if eos_id is None else eos_id
        if eos is None:
            raise ValueError("the tokenizer has no eos_token_id; pass eos_id")

        def decode(ids: Sequence[int]) -> str:
            return tokenizer.decode(list(ids), skip_special_tokens=False)

        return cls(mode, opens, dict(vocab.close_ids), tuple(vocab.newline_ids), int(eos), decode,
                   lambda q: chat_prompt_ids(tokenizer, q))

    @classmethod
    def from_fake(cls, vocab: Any, mode: str = "added") -> "TokenLayout":
        """Layout over :class:`rftt_plugin.backends.fake.FakeVocab` (duck-typed)."""
        nl = tuple(vocab.newline_ids)
        opens = {t: tuple(vocab.open_ids[t]) + nl for t in TAGS}
        return cls(mode, opens, dict(vocab.close_ids), nl, int(vocab.eos_id), vocab.decode, vocab.prompt_ids)
