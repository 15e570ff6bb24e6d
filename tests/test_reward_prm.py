"""PRM step scorers: a local HTTP PRM service and the tiny in-process model."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rftt_plugin.reward.prm import (
    HttpStepScorer,
    PRMError,
    StepScorer,
    TransformersStepScorer,
    format_math_shepherd,
    step_tag_spans,
)

QUESTION = "What is 2 + 3?"
STEPS = ["2 + 3 = 5.", "Check: 5 - 3 = 2.", "The answer is 5."]


def test_format_math_shepherd():
    text = format_math_shepherd(QUESTION, STEPS)
    assert text == ("What is 2 + 3? Step 1: 2 + 3 = 5. ки\nStep 2: Check: 5 - 3 = 2. ки\n"
                    "Step 3: The answer is 5. ки\n")
    assert [text[i] for i in step_tag_spans(QUESTION, STEPS)] == ["и", "и", "и"]
    # a tag or newline inside a step cannot add or shift tags
    odd = format_math_shepherd("Q", ["a ки b\nc"])
    assert odd.count("ки") == 1 and odd.count("\n") == 1


class _PRMServer:
    """Math-Shepherd-style PRM stub: score of step k is 1/(k+1); scripted failures first."""

    def __init__(self, fail_first: int = 0, fail_code: int = 503, delay_s: float = 0.0, body=None):
        self.requests: list[dict] = []
        self.fail_first = fail_first
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(payload)
                if delay_s:
                    time.sleep(delay_s)
                if owner.fail_first > 0:
                    owner.fail_first -= 1
                    self.send_response(fail_code)
                    self.end_headers()
                    return
                if body is not None:
                    data = body if isinstance(body, bytes) else json.dumps(body).encode()
                else:
                    rewards = [[1.0 / (k + 1) for k in range(1, text.count("ки") + 1)]
                               for text in payload["query"]]
                    data = json.dumps({"rewards": rewards}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)   # ephemeral port
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/get_reward"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_http_scorer_scores_and_batches():
    with _PRMServer() as srv:
        scorer = HttpStepScorer(srv.url, batch_size=2, timeout_s=5)
        assert isinstance(scorer, StepScorer)
        assert scorer.score_steps(QUESTION, STEPS) == pytest.approx([1 / 2, 1 / 3, 1 / 4])
        paths = [(QUESTION, STEPS[: k + 1]) for k in range(3)] + [("Q2", ["only"])]
        scores = scorer.score_many(paths)
        assert [len(s) for s in scores] == [1, 2, 3, 1]
        assert len(srv.requests) == 1 + 2                  # 4 paths in batches of 2
        assert srv.requests[0]["query"] == [format_math_shepherd(QUESTION, STEPS)]
        assert scorer.score_steps(QUESTION, []) == []


def test_http_scorer_retries_with_backoff():
    with _PRMServer(fail_first=2) as srv:
        scorer = HttpStepScorer(srv.url, retries=3, backoff_s=0.05)
        start = time.perf_counter()
        assert scorer.score_steps(QUESTION, STEPS[:1]) == pytest.approx([0.5])
        assert len(srv.requests) == 3
        assert time.perf_counter() - start >= 0.05 + 0.10   # two waits, doubling


def test_http_scorer_gives_up_after_retries():
    with _PRMServer(fail_first=10) as srv:
        with pytest.raises(PRMError, match="after 3 attempts"):
            HttpStepScorer(srv.url, retries=2, backoff_s=0.01).score_steps(QUESTION, STEPS)
        assert len(srv.requests) == 3


def test_http_scorer_does_not_retry_client_errors():
    with _PRMServer(fail_first=10, fail_code=400) as srv:
        with pytest.raises(PRMError, match="HTTP 400"):
            HttpStepScorer(srv.url, retries=3, backoff_s=0.01).score_steps(QUESTION, STEPS)
        assert len(srv.requests) == 1


def test_http_scorer_timeout_is_retried_then_fails():
    with _PRMServer(delay_s=0.5) as srv:
        with pytest.raises(PRMError):
            HttpStepScorer(srv.url, timeout_s=0.1, retries=1, backoff_s=0.01).score_steps(QUESTION, STEPS)
        assert len(srv.requests) == 2


@pytest.mark.parametrize("body", [b"not json", {"scores": [[0.5]]}, {"rewards": [[0.5, 0.5]]},
                                  {"rewards": [["x"]]}, {"rewards": [[float("nan")]]}, {"rewards": []}])
def test_http_scorer_rejects_malformed_answers(body):
    with _PRMServer(body=body) as srv:
        with pytest.raises(PRMError):
            HttpStepScorer(srv.url, retries=0).score_steps(QUESTION, STEPS[:1])


def test_http_scorer_unreachable():
    import socket

    with socket.socket() as s:               # a port that was free a moment ago: nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PRMError):
        HttpStepScorer(f"http://127.0.0.1:{port}/", retries=1, backoff_s=0.01, timeout_s=1).score_steps("q", ["a"])


async def test_http_scorer_async():
    with _PRMServer() as srv:
        scorer = HttpStepScorer(srv.url)
        results = await asyncio.gather(*(scorer.score_steps_async(QUESTION, STEPS[: k + 1]) for k in range(3)))
        assert [len(r) for r in results] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# in-process transformers PRM (random tiny model: shapes, ranges, determinism only)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_scorer(tiny_model_dir):
    return TransformersStepScorer(str(tiny_model_dir))


def test_transformers_scorer_shapes_and_range(tiny_scorer):
    assert isinstance(tiny_scorer, StepScorer)
    scores = tiny_scorer.score_steps(QUESTION, STEPS)
    assert len(scores) == len(STEPS)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert tiny_scorer.score_steps(QUESTION, STEPS) == scores            # deterministic
    assert tiny_scorer.score_steps(QUESTION, []) == []


def test_transformers_scorer_uses_prefix_only(tiny_scorer):
    # A causal PRM scores step k from the path so far: appending steps leaves earlier scores alone.
    full = tiny_scorer.score_steps(QUESTION, STEPS)
    prefix = tiny_scorer.score_steps(QUESTION, STEPS[:2])
    assert prefix == pytest.approx(full[:2], abs=1e-5)


def test_transformers_scorer_tag_positions_hit_the_tag(tiny_scorer):
    text = format_math_shepherd(QUESTION, STEPS)
    ids, positions = tiny_scorer._tag_positions(QUESTION, STEPS, text)
    assert len(positions) == len(STEPS) and positions == sorted(positions)
    # the tokenizer splits "ки" into byte pieces: each position is the tag's last piece
    assert all(ids[p] == tiny_scorer.tag_id for p in positions)


async def test_transformers_scorer_async(tiny_scorer):
    scores = await tiny_scorer.score_steps_async(QUESTION, STEPS)
    assert scores == tiny_scorer.score_steps(QUESTION, STEPS)


def test_transformers_scorer_needs_tokenizer_with_model(tiny_scorer):
    with pytest.raises(ValueError):
        TransformersStepScorer(tiny_scorer.model)
