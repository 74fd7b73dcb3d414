"""The webhook client (core.webhooks.urls.GuardedClients): one POST per delivery on kept-alive
connections, answers read just enough to reuse them, the SSRF guard on every new connection."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from core.webhooks.urls import AddressRefused, GuardedClients


@dataclass
class Scripted:
    """A TCP server that reads HTTP/1.1 requests and writes the scripted answers in order
    (``close`` after an answer: the server then closes that connection)."""

    answers: list[tuple[bytes, bool]] = field(default_factory=list)
    requests: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    """(connection number, head, body) of every request."""
    connections: int = 0
    port: int = 0
    silent: bool = False

    def serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.talk, args=(conn, self.connections), daemon=True).start()

    def talk(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.requests.append((number, head, body))
                if self.silent:
                    time.sleep(2)
                    return
                answer, close = self.answers.pop(0)
                conn.sendall(answer)
                if close:
                    return


@pytest.fixture
def server() -> Iterator[Scripted]:
    listener = socket.create_server(("127.0.0.1", 0))
    scripted = Scripted(port=listener.getsockname()[1])
    threading.Thread(target=scripted.serve, args=(listener,), daemon=True).start()
    yield scripted
    listener.close()


def url(server: Scripted) -> str:
    return f"http://127.0.0.1:{server.port}/hooks?x=1"


def test_answers_of_every_framing_are_read_and_the_connection_is_reused(
    server: Scripted,
) -> None:
    server.answers = [
        (b"HTTP/1.1 204 No Content\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
            False,
        ),
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", True),
        (b"HTTP/1.0 410 Gone\r\n\r\nno length: the body ends with the connection", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False),
    ]
    clients = GuardedClients(allow_private=True, timeout=5)
    headers = {"webhook-id": "msg_1", "content-type": "application/json"}
    statuses = [
        clients.post(url(server), content=b'{"n":%d}' % n, headers=headers) for n in range(6)
    ]
    clients.close()
    assert statuses == [204, 200, 202, 503, 410, 204]
    # one connection until the server said close, then one per close
    assert [number for number, _, _ in server.requests] == [1, 1, 1, 1, 2, 3]
    _, head, body = server.requests[0]
    lines = head.lower().split(b"\r\n")  # header names are case-insensitive
    assert lines[0] == b"post /hooks?x=1 http/1.1"
    assert f"host: 127.0.0.1:{server.port}".encode() in lines
    assert b"webhook-id: msg_1" in lines and b"content-length: 7" in lines
    assert body == b'{"n":0}'


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed(
    server: Scripted,
) -> None:
    server.answers = [(b"HTTP/1.1 204 No Content\r\n\r\n", True)] * 2
    clients = GuardedClients(allow_private=True, timeout=5)
    assert clients.post(url(server), content=b"{}", headers={}) == 204
    time.sleep(0.2)  # the server has closed it; the client kept it (no Connection: close)
    assert clients.post(url(server), content=b"{}", headers={}) == 204
    assert [number for number, _, _ in server.requests] == [1, 2]
    clients.close()


def test_each_thread_keeps_its_own_connection(server: Scripted) -> None:
    server.answers = [(b"HTTP/1.1 204 No Content\r\n\r\n", False)] * 4
    clients = GuardedClients(allow_private=True, timeout=5)

    def twice() -> None:
        for _ in range(2):
            clients.post(url(server), content=b"{}", headers={})

    threads = [threading.Thread(target=twice) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    clients.close()
    assert server.connections == 2 and len(server.requests) == 4


def test_refused_addresses_bad_headers_and_timeouts_send_nothing_or_fail_cleanly(
    server: Scripted,
) -> None:
    guarded = GuardedClients(allow_private=False, timeout=5)
    with pytest.raises(AddressRefused):
        guarded.post(url(server), content=b"{}", headers={})
    rebinding = GuardedClients(
        allow_private=False, timeout=5, resolver=lambda host, port: ["8.8.8.8", "10.0.0.5"]
    )
    with pytest.raises(AddressRefused):
        rebinding.post("http://hooks.example.com/x", content=b"{}", headers={})
    clients = GuardedClients(allow_private=True, timeout=0.5)
    with pytest.raises(httpx.LocalProtocolError):
        clients.post(url(server), content=b"{}", headers={"x-a": "1\r\nx-injected: 1"})
    with pytest.raises(httpx.UnsupportedProtocol):
        clients.post("ftp://127.0.0.1/x", content=b"{}", headers={})
    assert server.requests == []
    server.silent = True
    with pytest.raises(httpx.ReadTimeout):
        clients.post(url(server), content=b"{}", headers={})
    clients.close()
    with pytest.raises(httpx.ConnectError):
        clients.post("http://127.0.0.1:1/x", content=b"{}", headers={})
