"""A request the HTTP parser refuses never reaches the app; the server still answers it in
problem details (core.api.http_protocol), and closes the connection."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from core.api.http_protocol import ProblemH11Protocol, http_protocol
from tests.conftest import LiveServer

REFUSED = {
    "DEL in a header value": b"X-Purpose: a\x7fb\r\nContent-Length: 0\r\n",
    "a control character in a header value": b"Idempotency-Key: a\x01b\r\nContent-Length: 0\r\n",
    "a space in a header name": b"X Purpose: x\r\nContent-Length: 0\r\n",
    "Content-Length and Transfer-Encoding": (
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"
    ),
}


def _send(server: LiveServer, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):  # the server closes the connection: the loop ends
            answer += chunk
    return answer


@pytest.mark.parametrize("headers", REFUSED.values(), ids=list(REFUSED))
def test_a_request_the_parser_refuses_is_answered_in_problem_details(
    live_server: LiveServer, headers: bytes
) -> None:
    raw = b"POST /api/v1/cases HTTP/1.1\r\nHost: insurdesk\r\n" + headers + b"\r\n0\r\n\r\n"
    answer = _send(live_server, raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0] == "HTTP/1.1 400 Bad Request"
    assert fields["content-type"] == "application/problem+json"
    assert fields["connection"] == "close"
    problem = json.loads(body)
    assert problem["type"] == "/problems/invalid-http" and problem["status"] == 400
    assert problem["title"] and problem["detail"].startswith("the request is not valid HTTP")


def test_the_h11_fallback_answers_the_same() -> None:
    """Where httptools is missing, uvicorn serves with h11; its own 400 is problem details
    too. A real uvicorn server on the h11 protocol, with an app of its own: the refused
    request never reaches an app (the platform's is not shared, whose start-up and shutdown
    belong to its own server)."""
    import threading
    import time

    import uvicorn

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never reached
        raise AssertionError("the parser should have refused the request")

    assert http_protocol() is not ProblemH11Protocol  # httptools is installed here
    server = LiveServer(app)
    server.server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=server.port, http=ProblemH11Protocol, lifespan="off"
        )
    )
    thread = threading.Thread(target=server.server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.server.started:
                break
            time.sleep(0.05)
        raw = b"GET /healthz HTTP/1.1\r\nHost: insurdesk\r\nX Purpose: x\r\n\r\n"
        answer = _send(server, raw)
    finally:
        server.server.should_exit = True
        thread.join(10)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["type"] == "/problems/invalid-http"
