"""The token ids of the functional tags in one tokenizer: the one home of tag ids.

:class:`TagIds` answers everything the search, the trainer glue and ``prepare-model`` ask about
the 16 tag strings (:mod:`rftt_plugin.tokens`) as token ids, in one of two modes:

``added`` (default): every tag string is one added, non-special token (``rftt prepare-model``);
  generation stops on the single ids of all 16 tags (a closing tag ends the step; an opening tag
  inside a step is an error, so it stops there too) and P(tag | context) is a softmax over the
  opening-tag ids.
``text``: tags are ordinary multi-piece text, as in the reference code, for models that were not
  prepared; ids are the pieces in running text (after a newline) and depend on the context, so
  generation stops on the eight closing-tag strings, not on ids.

Per tag it holds the ids of the opening tag, of the closing tag, and the *opening segment* the
search inserts to start a step (``<tag>`` then the newline; in ``text`` mode the tokenisation of
``"<tag>\\n"`` as it appears in running text, so the model sees the pieces it would write
itself); plus the newline inserted after a closing tag, the EOS appended after ``<output>`` and
``decode`` (grading and display only: nothing decoded is ever encoded again).

How a question becomes prompt ids is not a tag-id question: callers build them
(:func:`rftt_plugin.chat_prompt.chat_prompt_ids`) and hand them to the search. Tokenizers are
duck-typed (``encode``/``decode``), so this module imports nothing heavy; tests and benchmarks
build tag ids over the fake vocabulary with :meth:`TagIds.from_fake`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from rftt_plugin.tokens import CLOSE_STRINGS, TAG_STRINGS, TAGS, FunctionalTag, Step, render

__all__ = ["TOKEN_MODES", "TagIds", "TagVocabularyError", "tag_piece_ids"]

TOKEN_MODES = ("added", "text")


class TagVocabularyError(ValueError):
    """The tokenizer does not provide the functional tokens the requested mode needs."""


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def tag_piece_ids(tokenizer: Any, text: str, context: str = "\n") -> tuple[int, ...]:
    """Ids of ``text`` as the tokenizer splits it in running text, after ``context``.

    Encoding a string on its own can add a word-start marker (a Metaspace/SentencePiece
    tokenizer turns ``<clarify>`` into ``▁`` ``<`` ``clar`` ...); a tag in a response follows
    a newline, so the ids of ``context`` are encoded first and removed. If the context merges
    with the text (no clean split), the plain encoding of ``text`` is returned instead.
    """
    ctx = _encode(tokenizer, context)
    full = _encode(tokenizer, context + text)
    if len(full) > len(ctx) and full[:len(ctx)] == ctx:
        return tuple(full[len(ctx):])
    return tuple(_encode(tokenizer, text))


def _newline_after(tokenizer: Any, tag_string: str) -> tuple[int, ...]:
    """The ids of the ``"\\n"`` after a tag; if it merges with the tag's last piece (Qwen has
    ``">\\n"`` as one token), the newline as encoded mid-text instead."""
    head = _encode(tokenizer, tag_string)
    full = _encode(tokenizer, tag_string + "\n")
    if len(full) > len(head) and full[:len(head)] == head:
        return tuple(full[len(head):])
    return tag_piece_ids(tokenizer, "\n", context="x")


@dataclass(frozen=True)
class TagIds:
    """The tag ids of one tokenizer in one mode (see the module docstring).

    ``open_ids`` / ``close_ids``: per tag, the ids of ``<tag>`` / ``</tag>`` (one id each in
    ``added`` mode). ``open_segments``: what the search inserts to open a step. ``newline_ids``:
    the newline after a tag (inserted after a closing tag). ``eos_id``: None when the tokenizer
    has none (the search then refuses to run). ``decode``: ids -> text.
    """

    mode: str
    open_ids: Mapping[FunctionalTag, tuple[int, ...]]
    close_ids: Mapping[FunctionalTag, tuple[int, ...]]
    newline_ids: tuple[int, ...]
    open_segments: Mapping[FunctionalTag, tuple[int, ...]]
    eos_id: int | None
    decode: Callable[[Sequence[int]], str]

    def __post_init__(self) -> None:
        if self.mode not in TOKEN_MODES:
            raise ValueError(f"unknown token mode {self.mode!r}; choose one of {TOKEN_MODES}")
        missing = [t.value for t in TAGS
                   if t not in self.open_ids or t not in self.open_segments or t not in self.close_ids]
        if missing:
            raise ValueError(f"tag ids lack tags {missing}")
        if self.mode == "added":
            bad = [t.value for t in TAGS if len(self.close_ids[t]) != 1 or len(self.open_ids[t]) != 1]
            if bad:
                raise ValueError(f"added mode needs single-id tags; not single: {bad}")

    # -- what the search asks --------------------------------------------------------------------
    @property
    def after_close_ids(self) -> tuple[int, ...]:
        """The ids inserted after a closing tag (the newline)."""
        return self.newline_ids

    def open_id(self, tag: FunctionalTag) -> int:
        """The single opening-tag id (added mode)."""
        return self.open_ids[tag][0]

    def ranking_candidate(self, tag: FunctionalTag) -> list[int]:
        """What the tag ranking scores: the opening id (added) or the whole opening segment (text)."""
        return [self.open_id(tag)] if self.mode == "added" else list(self.open_segments[tag])

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """The ids a step's generation stops on: the 8 closing then the 8 opening ids (added mode)."""
        if self.mode != "added":
            return ()
        return tuple(self.close_ids[t][0] for t in TAGS) + tuple(self.open_id(t) for t in TAGS)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """The strings a step's generation stops on: the closing tags (text mode only)."""
        return () if self.mode == "added" else CLOSE_STRINGS

    def tag_of_id(self, token_id: int) -> tuple[FunctionalTag, bool] | None:
        """(tag, is_closing) for a single tag id, else None (opening tags: added mode only)."""
        for tag in TAGS:
            if self.close_ids[tag] == (token_id,):
                return tag, True
            if self.mode == "added" and self.open_id(tag) == token_id:
                return tag, False
        return None

    def tag_for_open_id(self, token_id: int) -> FunctionalTag | None:
        """The tag whose opening tag is the single id ``token_id`` (None in text mode)."""
        for tag, ids in self.open_ids.items():
            if ids == (token_id,):
                return tag
        return None

    def tag_for_close_id(self, token_id: int) -> FunctionalTag | None:
        """The tag whose closing tag is the single id ``token_id`` (None in text mode)."""
        for tag, ids in self.close_ids.items():
            if ids == (token_id,):
                return tag
        return None

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_tokenizer(cls, tokenizer: Any, mode: str = "added", eos_id: int | None = None) -> "TagIds":
        """Read the tag ids from a Hugging Face tokenizer. In ``added`` mode every tag string must
        be a single id, else :class:`TagVocabularyError` names the fix."""
        if mode not in TOKEN_MODES:
            raise ValueError(f"unknown token mode {mode!r}; choose one of {TOKEN_MODES}")
        newline = _newline_after(tokenizer, TAGS[0].open)
        if mode == "added":
            ids = {s: _encode(tokenizer, s) for s in TAG_STRINGS}
            bad = {s: len(v) for s, v in ids.items() if len(v) != 1}
            if bad:
                listing = ", ".join(f"{s} ({n} pieces)" for s, n in bad.items())
                raise TagVocabularyError(
                    f"token mode 'added' needs every functional tag to be a single token, but "
                    f"{len(bad)} of 16 are not: {listing}. Prepare the model first with "
                    f"`rftt prepare-model --model <base> --out <dir>` and train from <dir>, or "
                    f"use token mode 'text'.")
            opens = {t: tuple(ids[t.open]) for t in TAGS}
            closes = {t: tuple(ids[t.close]) for t in TAGS}
            segments = {t: opens[t] + newline for t in TAGS}
        else:
            opens = {t: tag_piece_ids(tokenizer, t.open) for t in TAGS}
            closes = {t: tag_piece_ids(tokenizer, t.close) for t in TAGS}
            segments = {t: tag_piece_ids(tokenizer, t.open + "\n") for t in TAGS}
        eos = getattr(tokenizer, "eos_token_id", None) if eos_id is None else eos_id

        def decode(ids: Sequence[int]) -> str:
            return tokenizer.decode(list(ids), skip_special_tokens=False)

        return cls(mode, opens, closes, newline, segments, None if eos is None else int(eos), decode)

    @classmethod
    def from_fake(cls, vocab: Any, mode: str = "added") -> "TagIds":
        """Tag ids over :class:`rftt_plugin.backends.fake.FakeVocab` (duck-typed)."""
        nl = tuple(vocab.newline_ids)
        opens = {t: tuple(vocab.open_ids[t]) for t in TAGS}
        return cls(mode, opens, dict(vocab.close_ids), nl, {t: opens[t] + nl for t in TAGS}, int(vocab.eos_id),
                   vocab.decode)

    # -- checks ----------------------------------------------------------------------------------
    def check(self, tokenizer: Any) -> list[str]:
        """Problems (empty list = fine): every tag string must encode to the recorded ids and
        decode back unchanged, with and without ``skip_special_tokens``; in ``added`` mode no tag
        may be a special token; a full rendered response must round-trip too."""
        problems: list[str] = []
        special = set(getattr(tokenizer, "all_special_ids", ()) or ())
        for tag in TAGS:
            for s, ids in ((tag.open, self.open_ids[tag]), (tag.close, self.close_ids[tag])):
                got = tuple(_encode(tokenizer, s)) if self.mode == "added" else tag_piece_ids(tokenizer, s)
                if got != ids:
                    problems.append(f"{s} encodes to {list(got)}, expected {list(ids)}")
                for skip in (False, True):
                    back = tokenizer.decode(list(ids), skip_special_tokens=skip)
                    if back != s:
                        problems.append(f"{s} decodes to {back!r} (skip_special_tokens={skip})")
                if self.mode == "added" and special.intersection(ids):
                    problems.append(f"{s} is a special token: skip_special_tokens would drop it")
        sample = render(Step(t, f"step {i}: 2 + {i} = {2 + i}") for i, t in enumerate(TAGS))
        ids = _encode(tokenizer, sample)
        for skip in (False, True):
            back = tokenizer.decode(ids, skip_special_tokens=skip)
            if back != sample:
                problems.append(f"a rendered response does not round-trip (skip_special_tokens={skip}): "
                                f"{back[:60]!r}...")
        if self.mode == "added":
            missing = [t.value for t in TAGS if self.open_ids[t][0] not in ids or self.close_ids[t][0] not in ids]
            if missing:
                problems.append(f"tag ids absent from an encoded response for: {', '.join(missing)}")
        return problems
