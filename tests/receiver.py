"""A webhook receiver on loopback for tests: a real HTTP server in a thread that keeps
every request it was sent, and answers as the test tells it (a status, a hang)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    """What the receiver answered; None while it has not, or when it hung up."""

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    """``answers`` are used one per request, in order (an int status, ``"hang"``: sleep
    ``hang`` seconds, answer nothing; ``"hold"``: wait for :attr:`release`); then 200."""

    def __init__(self, port: int = 0, hang: float = 2.0) -> None:
        self.port = port
        self.hang = hang
        self.delay = 0.0
        """Seconds each answer takes."""
        self.in_flight = 0
        self.most_in_flight = 0
        self.answers: list[int | str] = []
        self.requests: list[Request] = []
        self.holding = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = Request(dict(self.headers), body)
                with receiver._lock:
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.requests.append(request)  # as it comes: a hang is seen at once
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                self._answer(request, answer)

            def _answer(self, request: Request, answer: int | str) -> None:
                try:
                    time.sleep(receiver.delay)
                    if answer == "hold":
                        receiver.holding.set()
                        receiver.release.wait(30)
                    if answer == "hang":
                        time.sleep(receiver.hang)
                finally:
                    # out of flight before the answer goes: a sender that has it may
                    # post again at once, and that post must not count this one still
                    with receiver._lock:
                        receiver.in_flight -= 1
                status = answer if isinstance(answer, int) else None
                if status is None:
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                request.status = status  # answered

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: connections to the port are refused until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def taken(self) -> list[int]:
        """The ids of the events it answered 2xx to, in the order it got them."""
        with self._lock:
            return [r.event["id"] for r in self.requests if r.status and r.status < 300]

    def seen(self) -> list[int]:
        """The ids of every request, answered or not."""
        with self._lock:
            return [r.event["id"] for r in self.requests]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[int]:
        """:meth:`taken` once it holds ``count`` ids (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while len(self.taken()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.taken()
