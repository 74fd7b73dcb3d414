"""Where webhooks may go: the SSRF guard, at subscription time and at every connection.

A tenant-chosen URL must not reach the platform's own network. Rules:

* ``https`` only with production settings (``http`` is accepted elsewhere, for tests and
  development receivers);
* no user-info in the URL, no fragment, a host name or address;
* every address the host resolves to must be public (:func:`is_public`): loopback, private
  (RFC 1918, ULA), link-local (cloud metadata at 169.254.169.254), shared (100.64/10),
  multicast, reserved and unspecified addresses are refused, IPv4-mapped IPv6 included, unless
  ``INSURDESK_WEBHOOK_ALLOW_PRIVATE`` allows them.

The check runs when a subscription is saved and again when a delivery connects: the HTTP
client's network backend (:class:`GuardedBackend`) resolves the host, checks the addresses
and connects to the checked address itself, so a DNS answer that changes in between (DNS
rebinding) cannot slip a private address through. TLS still verifies the certificate for the
host name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

import httpcore
import httpx

Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``; :func:`resolve` by default (tests substitute one)."""


class AddressRefused(Exception):
    """A webhook URL or the address it resolves to is not allowed."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: str) -> bool:
    """True for a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            ip = mapped
    return bool(ip.is_global) and not ip.is_multicast


def allowed_addresses(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = resolve
) -> list[str]:
    """The addresses of ``host`` a webhook may connect to; raises :class:`AddressRefused`."""
    try:
        addresses = resolver(host, port)
    except OSError as exc:
        raise AddressRefused(f"the host {host!r} cannot be resolved: {exc}") from exc
    if not addresses:
        raise AddressRefused(f"the host {host!r} has no address")
    if allow_private:
        return addresses
    refused = [a for a in addresses if not is_public(a)]
    if refused:
        raise AddressRefused(
            f"the host {host!r} resolves to a non-public address ({refused[0]}); webhooks may "
            "only reach public addresses"
        )
    return addresses


def check_url(
    url: str, *, https_only: bool, allow_private: bool, resolver: Resolver = resolve
) -> None:
    """Refuse a subscription URL that breaks the rules above (raises :class:`AddressRefused`)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"the URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise AddressRefused("the URL must use https (or http outside production)")
    if https_only and scheme != "https":
        raise AddressRefused("webhook URLs must use https")
    if not parts.hostname:
        raise AddressRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("the URL must not carry a user name or password")
    if parts.fragment:
        raise AddressRefused("the URL must not have a fragment")
    if any(ch.isspace() for ch in url):
        raise AddressRefused("the URL must not contain spaces")
    allowed_addresses(
        parts.hostname,
        port or (443 if scheme == "https" else 80),
        allow_private=allow_private,
        resolver=resolver,
    )


class GuardedBackend(httpcore.SyncBackend):
    """An httpcore network backend that connects only to allowed addresses (see above)."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = resolve) -> None:
        self.allow_private = allow_private
        self.resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Resolve ``host``, refuse non-public addresses, connect to a checked one."""
        addresses = allowed_addresses(
            host, port, allow_private=self.allow_private, resolver=self.resolver
        )
        error: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error


USER_AGENT = "insurdesk-webhooks/1"


def _guarded_pool(*, allow_private: bool, resolver: Resolver) -> httpcore.ConnectionPool:
    """The connection pool of a webhook client: TLS verified, keep-alive, guarded backend."""
    return httpcore.ConnectionPool(
        ssl_context=ssl.create_default_context(),
        max_connections=64,
        max_keepalive_connections=16,
        keepalive_expiry=30.0,
        network_backend=GuardedBackend(allow_private=allow_private, resolver=resolver),
    )


def guarded_client(
    *, allow_private: bool, timeout: float = 10.0, resolver: Resolver = resolve
) -> httpx.Client:
    """An HTTP client for webhook deliveries: no redirects, no proxies from the environment,
    and every connection through :class:`GuardedBackend`."""
    transport = httpx.HTTPTransport(retries=0)
    # the same pool httpx builds, guarded
    transport._pool = _guarded_pool(allow_private=allow_private, resolver=resolver)
    return httpx.Client(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


_MAX_HEAD = 64 * 1024
"""Bytes of a response's status line and headers read at most."""
_MAX_DRAIN = 1024 * 1024
"""Bytes of a response body read (and dropped) to keep the connection; beyond, it is closed."""


class _Wire:
    """One kept-alive connection of a worker thread to one origin."""

    def __init__(self, sock: socket.socket, origin: tuple[str, str, int]) -> None:
        self.sock = sock
        self.origin = origin
        self.buffer = b""
        self.used_at = time.monotonic()

    def stale(self, expiry: float) -> bool:
        """Idle too long, or readable while idle (the server closed it, or sent junk)."""
        if time.monotonic() - self.used_at > expiry:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        """Close the socket (errors ignored)."""
        with contextlib.suppress(OSError):
            self.sock.close()

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError as exc:
            raise httpx.ReadTimeout("the receiver did not answer in time") from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        if not chunk:
            raise httpx.RemoteProtocolError("the receiver closed the connection early")
        self.buffer += chunk

    def head(self) -> bytes:
        """The response's status line and headers (without the blank line)."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
                return head
            if len(self.buffer) > _MAX_HEAD:
                raise httpx.RemoteProtocolError("the response's headers are too long")
            self._fill()

    def exactly(self, size: int) -> None:
        """Read and drop ``size`` bytes."""
        while len(self.buffer) < size:
            self._fill()
        self.buffer = self.buffer[size:]

    def line(self) -> bytes:
        """One CRLF-terminated line (without the CRLF)."""
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
                return line
            if len(self.buffer) > _MAX_HEAD:
                raise httpx.RemoteProtocolError("a chunk header is too long")
            self._fill()

    def until_closed(self) -> None:
        """Read and drop everything until the server closes the connection."""
        total = 0
        while total <= _MAX_DRAIN:
            try:
                self._fill()
            except httpx.RemoteProtocolError:
                return
            total += len(self.buffer)
            self.buffer = b""


def _header_bytes(name: str, value: str) -> bytes:
    line = f"{name}: {value}\r\n"
    if any(ch in name or ch in value for ch in "\r\n\0") or ":" in name or not name:
        raise httpx.LocalProtocolError(f"the header {name!r} contains a line break")
    try:
        return line.encode("ascii")
    except UnicodeEncodeError as exc:
        raise httpx.LocalProtocolError(f"the header {name!r} is not ASCII") from exc


class GuardedClients:
    """The platform's one way to POST to a webhook: guarded keep-alive connections per thread.

    Both webhook paths send through it — the ``webhook`` notification channel
    (:mod:`core.notifications.transports`) and integrators' subscriptions
    (:mod:`core.webhooks.delivery`) — so one SSRF rule set applies to every tenant-chosen URL:
    every new connection resolves the host, refuses it unless every address is allowed
    (:func:`allowed_addresses`, as :class:`GuardedBackend` does for :func:`guarded_client`)
    and connects to a checked address itself; TLS verifies the certificate for the host name;
    no redirects (a 3xx is just the answer's status), no proxies. Each worker thread keeps its
    own connections (no lock shared by the threads), one per origin, reused for
    ``keepalive_expiry`` seconds while the server keeps them open, so a receiver sees a few
    long-lived connections instead of one per message.

    The request is one ``POST`` written with a single ``sendall`` (HTTP/1.1, ``Content-Length``)
    and the answer is read just enough to know its status and to keep the connection usable
    (a body by ``Content-Length`` or chunked, up to 1 MiB, else the connection is closed). A
    webhook POST needs nothing more, and ``httpcore``/``h11`` cost ten times the CPU of the
    exchange itself (about 0.3 ms per delivery, a quarter of a worker's time). A kept connection
    that the server closed while idle is noticed before it is used (it turns readable) and
    replaced; a request is never sent twice.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        timeout: float = 10.0,
        resolver: Resolver = resolve,
        keepalive_expiry: float = 30.0,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.timeout = timeout
        self.keepalive_expiry = keepalive_expiry
        self._ssl = ssl.create_default_context()
        self._local = threading.local()
        self._all: list[dict[tuple[str, str, int], _Wire]] = []
        self._lock = threading.Lock()

    def _wires(self) -> dict[tuple[str, str, int], _Wire]:
        found: dict[tuple[str, str, int], _Wire] | None = getattr(self._local, "wires", None)
        if found is None:
            found = {}
            self._local.wires = found
            with self._lock:
                self._all.append(found)
        return found

    def _connect(self, origin: tuple[str, str, int]) -> _Wire:
        scheme, host, port = origin
        addresses = allowed_addresses(
            host, port, allow_private=self.allow_private, resolver=self.resolver
        )
        error: Exception | None = None
        for address in addresses:
            try:
                sock = socket.create_connection((address, port), timeout=self.timeout)
            except TimeoutError as exc:
                error = httpx.ConnectTimeout(f"connecting to {host}:{port} timed out")
                error.__cause__ = exc
                continue
            except OSError as exc:
                error = httpx.ConnectError(str(exc) or type(exc).__name__)
                error.__cause__ = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                try:
                    sock = self._ssl.wrap_socket(sock, server_hostname=host)
                except (OSError, ssl.SSLError) as exc:
                    sock.close()
                    error = httpx.ConnectError(str(exc) or type(exc).__name__)
                    error.__cause__ = exc
                    continue
            return _Wire(sock, origin)
        assert error is not None
        raise error

    def post(self, url: str, *, content: bytes, headers: Mapping[str, str]) -> int:
        """POST ``content`` to ``url``; returns the response's status code (the body is read
        and dropped, so the connection can be reused).

        :raises AddressRefused: the host resolves to an address that is not allowed.
        :raises httpx.TransportError: the request failed (connection, timeout, protocol).
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"webhooks are sent over http(s), not {scheme!r}")
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise httpx.UnsupportedProtocol(f"the URL is malformed: {exc}") from None
        if not host:
            raise httpx.UnsupportedProtocol("the URL has no host")
        default = 443 if scheme == "https" else 80
        port = port or default
        origin = (scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        name = f"[{host}]" if ":" in host else host
        lines = [
            f"POST {target} HTTP/1.1\r\n".encode("ascii", "strict"),
            _header_bytes("host", name if port == default else f"{name}:{port}"),
            _header_bytes("user-agent", USER_AGENT),
        ]
        lines += [
            _header_bytes(k, v)
            for k, v in headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
        ]
        lines.append(b"content-length: %d\r\n\r\n" % len(content))
        request = b"".join(lines) + content
        wires = self._wires()
        wire = wires.pop(origin, None)
        if wire is not None and wire.stale(self.keepalive_expiry):
            wire.close()
            wire = None
        if wire is None:
            wire = self._connect(origin)
        try:
            status, keep = self._exchange(wire, request)
        except BaseException:
            wire.close()
            raise
        if keep:
            wire.used_at = time.monotonic()
            wires[origin] = wire
        else:
            wire.close()
        return status

    def _exchange(self, wire: _Wire, request: bytes) -> tuple[int, bool]:
        """Send ``request``, read the answer; its status and whether the connection stays."""
        wire.sock.settimeout(self.timeout)
        try:
            wire.sock.sendall(request)
        except TimeoutError as exc:
            raise httpx.WriteTimeout("sending to the receiver timed out") from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        while True:
            head = wire.head()
            status_line, _, rest = head.partition(b"\r\n")
            try:
                version, code = status_line.decode("latin-1").split(" ", 2)[:2]
                status = int(code)
            except ValueError:
                raise httpx.RemoteProtocolError(
                    f"not an HTTP status line: {status_line[:80]!r}"
                ) from None
            if not version.startswith("HTTP/1.") or not 100 <= status <= 999:
                raise httpx.RemoteProtocolError(f"not an HTTP/1 answer: {status_line[:80]!r}")
            if 100 <= status < 200:  # an interim answer (e.g. 100 Continue): the real one follows
                continue
            break
        fields: dict[str, str] = {}
        for raw in rest.split(b"\r\n"):
            key, sep, value = raw.partition(b":")
            if sep:
                fields[key.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        connection = fields.get("connection", "").lower()
        keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        if status in (204, 304):
            return status, keep
        if "chunked" in fields.get("transfer-encoding", "").lower():
            drained = 0
            while True:
                size_line = wire.line().split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise httpx.RemoteProtocolError("a malformed chunk size") from None
                if size == 0:
                    while wire.line():  # trailers, up to the blank line
                        pass
                    return status, keep
                drained += size
                if drained > _MAX_DRAIN:
                    return status, False
                wire.exactly(size + 2)
        if "content-length" in fields:
            try:
                length = int(fields["content-length"])
            except ValueError:
                raise httpx.RemoteProtocolError("a malformed Content-Length") from None
            if length > _MAX_DRAIN:
                return status, False
            wire.exactly(length)
            return status, keep
        wire.until_closed()  # no length: the body ends when the server closes
        return status, False

    def close(self) -> None:
        """Close every thread's connections."""
        with self._lock:
            every, self._all = self._all, []
        for wires in every:
            for wire in list(wires.values()):
                wire.close()
            wires.clear()
        self._local = threading.local()


__all__ = [
    "AddressRefused",
    "GuardedBackend",
    "GuardedClients",
    "allowed_addresses",
    "check_url",
    "guarded_client",
    "is_public",
    "resolve",
]
