"""A tiny Math-Shepherd-style PRM HTTP service on 127.0.0.1 for tests (standard library only).

POST ``{"query": [path, ...]}`` -> ``{"rewards": [[score per step], ...]}``: every step scores
``step_score`` except the last, which scores ``last_score`` (so tests can tell which one a rule
used), or, with ``last_per_step``, ``min(1, last_per_step x number of steps)`` (so paths of
different lengths get different scores). Steps are counted by the Math-Shepherd step tag.
Requests are recorded.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STEP_TAG = "ки"


class PRMServer:
    def __init__(self, step_score: float = 0.25, last_score: float = 0.625, last_per_step: float | None = None):
        self.step_score, self.last_score, self.last_per_step = step_score, last_score, last_per_step
        self.requests: list[list[str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])).decode("utf-8"))
                paths = body["query"]
                owner.requests.append(paths)
                rewards = []
                for path in paths:
                    n = path.count(STEP_TAG)
                    last = owner.last_score if owner.last_per_step is None else min(1.0, owner.last_per_step * n)
                    rewards.append([owner.step_score] * (n - 1) + [last] if n else [])
                data = json.dumps({"rewards": rewards}).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/get_reward"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "PRMServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":  # used by the main_ppo test: serve until killed, print the url first
    import sys
    import time

    server = PRMServer()
    with server:
        print(server.url, flush=True)
        deadline = time.time() + float(sys.argv[1]) if len(sys.argv) > 1 else float("inf")
        while time.time() < deadline:
            time.sleep(0.5)
