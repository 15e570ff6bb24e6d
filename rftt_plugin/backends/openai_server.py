"""A small OpenAI-compatible ``/v1/completions`` server over any backend (vLLM's dialect).

It speaks exactly the subset :mod:`rftt_plugin.backends.openai` uses, with vLLM's response
shapes, so the client is tested end to end without a GPU, and a CPU machine can serve an hf
model to ``rftt search --backend openai``::

    python -m rftt_plugin.backends.openai_server --model ckpt/qwen-rftt --port 8000

Supported request fields: ``prompt`` (ids or a list of id lists), ``max_tokens``,
``temperature``, ``top_p``, ``top_k``, ``seed``, ``stop``, ``stop_token_ids``, ``logprobs``
(top entries are filled for ``logprobs > 1``; with 0/1 only the sampled id is listed),
``prompt_logprobs`` (the actual prompt ids only), ``logprob_token_ids`` (as vLLM 0.27.1: needs
``logprobs`` set, at most 128 ids in the vocabulary; each position's ``top_logprobs`` then holds
the sampled id and the listed ids; ``token_ids_field=False`` ignores the field, as vLLM 0.24.0),
``return_tokens_as_token_ids``. ``GET
/v1/models`` lists the model. Plain HTTP/1.1 on asyncio streams with keep-alive: no
dependency; not meant for production traffic.

``fault(payload) -> int | None`` lets tests fail a request with an HTTP status (e.g. 503).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any, Callable, Sequence

from rftt_plugin.backends.base import SamplingParams

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


class BadRequest(ValueError):
    pass


class CompletionServer:
    def __init__(self, backend: Any, model_name: str = "rftt-local", *, decode: Callable[[Sequence[int]], str] | None = None,
                 host: str = "127.0.0.1", port: int = 0, fault: Callable[[dict], int | None] | None = None,
                 token_ids_field: bool = True):
        self.backend = backend
        self.token_ids_field = token_ids_field
        self.model_name = model_name
        self.decode = decode
        self.host = host
        self.port = port
        self.fault = fault
        self.requests: list[dict] = []  # every completion payload received (tests inspect them)
        self._server: asyncio.base_events.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.base_url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "CompletionServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- HTTP -------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                status, payload = await self._route(method, path.split("?")[0], body)
                data = json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                             f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        if method == "GET" and path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": self.model_name, "object": "model"}]}
        if method != "POST" or path != "/v1/completions":
            return 404, {"error": {"message": f"no route {method} {path}"}}
        try:
            payload = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            return 400, {"error": {"message": f"bad JSON: {exc}"}}
        self.requests.append(payload)
        if self.fault is not None:
            status = self.fault(payload)
            if status:
                return status, {"error": {"message": "injected fault"}}
        try:
            return 200, await self._complete(payload)
        except BadRequest as exc:
            return 400, {"error": {"message": str(exc)}}
        except Exception as exc:  # noqa: BLE001 - reported to the client like vLLM's 500s
            return 500, {"error": {"message": f"{type(exc).__name__}: {exc}"}}

    # -- completions ------------------------------------------------------------------------------
    async def _complete(self, p: dict) -> dict:
        if p.get("model") not in (None, self.model_name):
            raise BadRequest(f"model {p.get('model')!r} is not served here (serving {self.model_name!r})")
        prompt = p.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(x, list) for x in prompt):
            prompts = prompt
        else:
            raise BadRequest("prompt must be a list of token ids or a list of such lists")
        try:
            params = SamplingParams(max_tokens=int(p.get("max_tokens", 16)), temperature=float(p.get("temperature", 1.0)),
                                    top_p=float(p.get("top_p", 1.0)), top_k=int(p.get("top_k", -1) or -1),
                                    stop_token_ids=tuple(p.get("stop_token_ids") or ()),
                                    stop=tuple([p["stop"]] if isinstance(p.get("stop"), str) else p.get("stop") or ()),
                                    seed=p.get("seed"))
        except (TypeError, ValueError) as exc:
            raise BadRequest(str(exc)) from exc
        choices = await asyncio.gather(*(self._choice(i, list(ids), params, p) for i, ids in enumerate(prompts)))
        return {"id": f"cmpl-{time.monotonic_ns()}", "object": "text_completion", "created": int(time.time()),
                "model": self.model_name, "choices": list(choices)}

    def _tok(self, token_id: int, as_ids: bool) -> str:
        if as_ids or self.decode is None:
            return f"token_id:{token_id}"
        return self.decode([token_id])

    async def _choice(self, index: int, ids: list[int], params: SamplingParams, p: dict) -> dict:
        as_ids = bool(p.get("return_tokens_as_token_ids"))
        choice: dict[str, Any] = {"index": index}
        asked = p.get("logprob_token_ids") if self.token_ids_field else None
        if asked:
            if p.get("logprobs") is None:
                raise BadRequest("when using `logprob_token_ids`, `logprobs` must be set.")
            vocab = getattr(self.backend, "vocab_size", None)
            if len(asked) > 128 or any(not isinstance(t, int) or t < 0 or (vocab is not None and t >= vocab)
                                       for t in asked):
                raise BadRequest(f"logprob_token_ids must be at most 128 ids in the vocabulary, got {asked}")
        if p.get("prompt_logprobs") is not None:
            plp = await self._prompt_logprobs(ids)
            choice["prompt_logprobs"] = [None] + [
                {str(tok): {"logprob": lp, "rank": None, "decoded_token": self._tok(tok, False)}}
                for tok, lp in zip(ids[1:], plp[1:])]
        gen = await self.backend.generate(ids, params)
        if gen.finish_reason == "error":
            raise RuntimeError(f"generation failed: {gen.stop_reason}")
        k = p.get("logprobs")
        if k is not None:
            tops = []
            for j, (tok, lp) in enumerate(zip(gen.token_ids, gen.logprobs)):
                entry = {self._tok(tok, as_ids): lp}
                if asked:  # vLLM: the listed ids take the place of the top-k
                    vals = await self.backend.next_token_logprobs(ids + gen.token_ids[:j], list(asked))
                    entry = {**entry, **{self._tok(t, as_ids): v for t, v in zip(asked, vals)}}
                elif int(k) > 1 and hasattr(self.backend, "top_logprobs"):
                    top = await self.backend.top_logprobs(ids + gen.token_ids[:j], int(k))
                    entry = {**{self._tok(t, as_ids): v for t, v in top.items()}, **entry}
                tops.append(entry)
            choice["logprobs"] = {"tokens": [self._tok(t, as_ids) for t in gen.token_ids],
                                  "token_logprobs": list(gen.logprobs), "top_logprobs": tops,
                                  "text_offset": list(range(len(gen.token_ids)))}
        else:
            choice["logprobs"] = None
        choice["text"] = self.decode(gen.token_ids) if self.decode else ""
        if gen.finish_reason == "length":
            choice["finish_reason"], choice["stop_reason"] = "length", None
        elif gen.finish_reason == "eos":
            choice["finish_reason"], choice["stop_reason"] = "stop", None
        else:
            choice["finish_reason"], choice["stop_reason"] = "stop", gen.stop_reason
        return choice

    async def _prompt_logprobs(self, ids: list[int]) -> list[float | None]:
        if hasattr(self.backend, "prompt_logprobs"):
            return await self.backend.prompt_logprobs(ids)
        vals = await asyncio.gather(*(self.backend.next_token_logprobs(ids[:i], [ids[i]]) for i in range(1, len(ids))))
        return [None] + [v[0] for v in vals]


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - manual use
    parser = argparse.ArgumentParser(description="Serve an hf model over a minimal vLLM-style /v1/completions API")
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    async def run() -> None:
        from rftt_plugin.backends.hf import HFBackend

        backend = HFBackend.from_pretrained(args.model, device=args.device)
        server = CompletionServer(backend, args.served_model_name or args.model, decode=backend._decode,
                                  host=args.host, port=args.port)
        print(f"serving {server.model_name} at {await server.start()}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
