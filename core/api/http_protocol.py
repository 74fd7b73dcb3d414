"""The HTTP protocol the web server runs: uvicorn's, answering unparsable requests in RFC 9457.

A request the HTTP parser refuses never reaches the application, so uvicorn answers it itself,
with a plain-text 400 ("Invalid HTTP request received."). Examples are a control character or
DEL in a header value, a header name with a space, or both ``Content-Length`` and
``Transfer-Encoding``. httptools (llhttp), the parser the platform runs on (decision 0015),
refuses more of these than h11 did. Here that answer is the same 400, as
``application/problem+json`` like every other error of the API (slug ``invalid-http``). The
connection is still closed afterwards, as uvicorn does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from core.api.problems import PROBLEM_MEDIA_TYPE, Problem, problem_document

DETAIL = "the request is not valid HTTP/1.1 (its request line, a header or its framing)"


def problem_400_body(msg: str) -> bytes:
    """The problem details of a request the HTTP parser refused (``msg``: uvicorn's reason)."""
    problem = Problem(400, f"{DETAIL}: {msg}", slug="invalid-http")
    return json.dumps(problem_document(problem)).encode()


class ProblemH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; its own 400 is problem details."""

    def send_400_response(self, msg: str) -> None:
        body = problem_400_body(msg)
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ]
        response = h11.Response(status_code=400, headers=headers, reason=STATUS_PHRASES[400])
        for event in (response, h11.Data(data=body), h11.EndOfMessage()):
            output = self.conn.send(event)
            if output:
                self.transport.write(output)
        self.transport.close()


try:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError:  # httptools not installed: h11 serves
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


if HttpToolsProtocol is not None:

    class ProblemHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol; its own 400 is problem details."""

        def send_400_response(self, msg: str) -> None:
            body = problem_400_body(msg)
            content = [STATUS_LINE[400]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend(
                [
                    b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n",
                    b"\r\n",
                    body,
                ]
            )
            self.transport.write(b"".join(content))
            self.transport.close()


def http_protocol() -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.run(http=...)``: httptools when installed (what
    uvicorn's ``auto`` picks), else h11, either answering its own 400 in problem details."""
    if HttpToolsProtocol is not None:
        return ProblemHttpToolsProtocol
    return ProblemH11Protocol


def server_options() -> dict[str, Any]:
    """uvicorn's options the platform's web servers share (``insurdesk serve``, the tests'
    live server, both servers of ``bench/api.py``): the event loop uvicorn's ``auto`` picks
    (uvloop when installed) and :func:`http_protocol`."""
    return {"loop": "auto", "http": http_protocol()}


__all__ = ["http_protocol", "problem_400_body", "server_options"]
