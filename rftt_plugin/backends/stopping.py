"""When does a token-by-token generation end? One pure rule shared by the local backends (fake,
hf) and hfcpu, which reports ``eos`` as vLLM's ``stop`` and leaves EOS out under ``ignore_eos``.

After each appended token, in this order (the first that applies wins):

1. the token is in ``params.stop_token_ids``             -> ``("stop", token_id)``
2. the token is an end-of-sequence id of the model       -> ``("eos", None)``
3. the decoded continuation contains a ``params.stop`` string -> ``("stop", string)``
   (only the text that the newest token could have completed is searched, so the check is
   linear in the number of new characters, not quadratic)
4. ``max_tokens`` ids have been produced                 -> ``("length", None)``

Stop ids take precedence over EOS so a caller that lists EOS among its stop ids gets ``stop``,
as in vLLM.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from rftt_plugin.backends.base import SamplingParams


class StopChecker:
    """Stateful checker for one sequence; call :meth:`check` after every appended token.

    ``params``: anything with ``stop``, ``stop_token_ids`` and ``max_tokens`` (the backends'
    :class:`SamplingParams`, hfcpu's ``SamplingSpec``)."""

    def __init__(self, params: SamplingParams, eos_ids: Iterable[int] = (),
                 decode: Callable[[Sequence[int]], str] | None = None, max_tokens: int | None = None):
        self.stop_ids = frozenset(params.stop_token_ids)
        self.eos_ids = frozenset(int(e) for e in eos_ids)
        self.stop_strings = tuple(s for s in params.stop if s)
        if self.stop_strings and decode is None:
            raise ValueError("stop strings need a decode function")
        self.decode = decode
        self.max_tokens = params.max_tokens if max_tokens is None else min(params.max_tokens, max_tokens)
        self._longest = max((len(s) for s in self.stop_strings), default=0)
        self._text_len = 0

    def check(self, generated: Sequence[int]) -> tuple[str, int | str | None] | None:
        """Return ``(finish_reason, stop_reason)`` if ``generated`` must end here, else None."""
        if generated:
            last = int(generated[-1])
            if last in self.stop_ids:
                return "stop", last
            if last in self.eos_ids:
                return "eos", None
            if self.stop_strings:
                text = self.decode(generated)  # type: ignore[misc]
                # A stop string completed by the newest token must end after the old text.
                start = max(0, self._text_len - self._longest - 8)  # slack: partial UTF-8 pieces
                self._text_len = len(text)
                hits = [(text.find(s, start), s) for s in self.stop_strings]
                hits = [(pos, s) for pos, s in hits if pos >= 0]
                if hits:
                    return "stop", min(hits)[1]
        if len(generated) >= self.max_tokens:
            return "length", None
        return None
