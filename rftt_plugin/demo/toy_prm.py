"""A rule-based step scorer for the CPU toy, served as a Math-Shepherd-style PRM over HTTP.

The toy's steps are exactly checkable ("7 + 3 = 10"), so a process reward needs no learned
model: each step scores 1 when every equation in it is right and 0 when one is wrong; an
``<output>`` step scores 0 when its boxed answer is not the result of the last equation before
it. Steps without an equation score 1. This is what issue 24's "outcome vs step reward"
ablation puts behind the project's own PRM interface (``rftt.reward.prm.url``), so the training
path is the one a real PRM takes.

Limits, on purpose: the operands are not checked against the question (a right sum of the
wrong numbers passes), and only integer ``+`` / ``-`` chains are understood.

>>> score_toy_steps(["Add from left to right.", "3 + 4 = 7", "7 - 2 = 6", "The answer is \\\\boxed{6}."])
[1.0, 1.0, 0.0, 1.0]
>>> score_toy_steps(["1 + 2 + 3 + 4 = 10", "The answer is \\\\boxed{11}."])
[1.0, 0.0]
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Sequence

from rftt_plugin.reward.prm import DEFAULT_STEP_TAG

_EQUATION = re.compile(r"(-?\d+(?:\s*[+-]\s*\d+)+)\s*=\s*(-?\d+)")
_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")
_TERM = re.compile(r"([+-]?)\s*(\d+)")


def chain_value(expression: str) -> int:
    """An integer ``+`` / ``-`` chain, left to right.

    >>> chain_value("5 + 3 - 2")
    6
    """
    total = 0
    for sign, digits in _TERM.findall(expression.replace(" ", "")):
        total += -int(digits) if sign == "-" else int(digits)
    return total


def score_toy_steps(steps: Sequence[str]) -> list[float]:
    """1.0 / 0.0 per step (see the module docstring)."""
    scores: list[float] = []
    last_result: int | None = None
    for step in steps:
        ok = True
        for lhs, rhs in _EQUATION.findall(step):
            ok = ok and chain_value(lhs) == int(rhs)
            last_result = int(rhs)
        boxed = _BOXED.findall(step)
        if boxed and last_result is not None and int(boxed[-1]) != last_result:
            ok = False
        scores.append(1.0 if ok else 0.0)
    return scores


def last_result(steps: Sequence[str]) -> int | None:
    """The last number the steps state as a result: the right side of their last equation, or a
    boxed answer written after it (None when they state none).

    >>> last_result(["Add from left to right.", "3 + 4 = 7", "7 - 2 = 6"])
    6
    >>> last_result(["3 + 4 = 7", "The answer is \\\\boxed{8}."]), last_result(["Add them up."])
    (8, None)
    """
    result = None
    for step in steps:
        found = [(m.start(), int(m.group(2))) for m in _EQUATION.finditer(step)]
        found += [(m.start(), int(m.group(1))) for m in _BOXED.finditer(step)]
        if found:
            result = max(found)[1]
    return result


def split_math_shepherd(text: str, step_tag: str = DEFAULT_STEP_TAG) -> list[str]:
    """The steps of a Math-Shepherd-formatted path (``rftt_plugin.reward.prm.format_math_shepherd``).

    >>> split_math_shepherd("Q? Step 1: 3 + 4 = 7 ки\\nStep 2: The answer is 7. ки\\n")
    ['3 + 4 = 7', 'The answer is 7.']
    """
    parts = text.split(step_tag)[:-1]  # everything after the last tag is the trailing newline
    return [re.sub(r"^.*?Step \d+:\s*", "", p, count=1, flags=re.S).strip() for p in parts]


class ToyPRMServer:
    """The scorer on ``127.0.0.1`` (a free port unless given), in a daemon thread.

    POST ``{"query": [path, ...]}`` -> ``{"rewards": [[score per step], ...]}``. A malformed
    request gets HTTP 400 with the reason, never a made-up score.
    """

    def __init__(self, port: int = 0, step_tag: str = DEFAULT_STEP_TAG):
        tag = step_tag

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8"))
                    paths = body["query"]
                    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                        raise ValueError("'query' must be a list of strings")
                    data, status = {"rewards": [score_toy_steps(split_math_shepherd(p, tag)) for p in paths]}, 200
                except (ValueError, KeyError, TypeError) as exc:
                    data, status = {"error": f"{type(exc).__name__}: {exc}"}, 400
                raw = json.dumps(data).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):  # one line per request would flood the run's log
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/get_reward"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ToyPRMServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    """``python -m rftt_plugin.demo.toy_prm [--port N]``: serve until Ctrl-C (prints the url first)."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m rftt_plugin.demo.toy_prm",
                                     description="Serve the CPU toy's rule-based step checker as a Math-Shepherd PRM "
                                                 "on 127.0.0.1 (for rftt.reward.prm.url or rftt eval --prm-url).")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = parser.parse_args(argv)
    with ToyPRMServer(args.port) as server:
        print(server.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
