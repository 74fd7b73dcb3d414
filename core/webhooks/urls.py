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

import http.client
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


_MAX_DRAIN = 1024 * 1024
"""Bytes of a response body read (and dropped) to keep the connection; beyond, it is closed."""


def _check_header(name: str, value: str) -> None:
    """Refuse a header that could split the request (line breaks, NUL) or is not ASCII."""
    if not name or ":" in name or any(ch in name or ch in value for ch in "\r\n\0"):
        raise httpx.LocalProtocolError(f"the header {name!r} contains a line break")
    if not (name.isascii() and value.isascii()):
        raise httpx.LocalProtocolError(f"the header {name!r} is not ASCII")


class _GuardedConnection(http.client.HTTPConnection):
    """A standard-library HTTP/1.1 connection whose ``connect`` resolves the host, refuses it
    unless every address is allowed and connects to a checked address itself (TLS, when
    ``ssl_context`` is given, verifies the certificate for the host name)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        allow_private: bool,
        resolver: Resolver,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self.allow_private = allow_private
        self.resolver = resolver
        self.ssl_context = ssl_context
        self.used_at = time.monotonic()

    def connect(self) -> None:
        """Connect to the first allowed address that answers."""
        addresses = allowed_addresses(
            self.host, self.port, allow_private=self.allow_private, resolver=self.resolver
        )
        error: Exception | None = None
        for address in addresses:
            try:
                sock = socket.create_connection((address, self.port), timeout=self.timeout)
            except TimeoutError as exc:
                error = httpx.ConnectTimeout(f"connecting to {self.host}:{self.port} timed out")
                error.__cause__ = exc
                continue
            except OSError as exc:
                error = httpx.ConnectError(str(exc) or type(exc).__name__)
                error.__cause__ = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
                except (OSError, ssl.SSLError) as exc:
                    sock.close()
                    error = httpx.ConnectError(str(exc) or type(exc).__name__)
                    error.__cause__ = exc
                    continue
            self.sock = sock
            return
        assert error is not None
        raise error

    def stale(self, expiry: float) -> bool:
        """Idle too long, or readable while idle (the server closed it, or sent junk)."""
        if self.sock is None or time.monotonic() - self.used_at > expiry:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


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

    HTTP/1.1 is the standard library's :mod:`http.client` (the answer is read just enough to
    keep the connection usable: a body up to 1 MiB, else the connection is closed); the
    connection pool of ``httpcore``/``h11`` cost several times the CPU of the exchange itself
    for a one-request POST. A kept connection that the server closed while idle is noticed
    before it is used (it turns readable) and replaced; a request is never sent twice.
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
        self._all: list[dict[tuple[str, str, int], _GuardedConnection]] = []
        self._lock = threading.Lock()

    def _wires(self) -> dict[tuple[str, str, int], _GuardedConnection]:
        found: dict[tuple[str, str, int], _GuardedConnection] | None = getattr(
            self._local, "wires", None
        )
        if found is None:
            found = {}
            self._local.wires = found
            with self._lock:
                self._all.append(found)
        return found

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
        port = port or (443 if scheme == "https" else 80)
        origin = (scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = {"user-agent": USER_AGENT}
        for name, value in headers.items():
            _check_header(name, value)
            if name.lower() not in ("host", "content-length", "transfer-encoding", "connection"):
                sent[name] = value
        wires = self._wires()
        conn = wires.pop(origin, None)
        if conn is not None and conn.stale(self.keepalive_expiry):
            conn.close()
            conn = None
        if conn is None:
            conn = _GuardedConnection(
                host,
                port,
                timeout=self.timeout,
                allow_private=self.allow_private,
                resolver=self.resolver,
                ssl_context=self._ssl if scheme == "https" else None,
            )
            conn.connect()
        try:
            status, keep = self._exchange(conn, target, content, sent)
        except BaseException:
            conn.close()
            raise
        if keep:
            conn.used_at = time.monotonic()
            wires[origin] = conn
        else:
            conn.close()
        return status

    def _exchange(
        self, conn: _GuardedConnection, target: str, content: bytes, headers: dict[str, str]
    ) -> tuple[int, bool]:
        """Send the request, read the answer; its status and whether the connection stays."""
        try:
            conn.request("POST", target, body=content, headers=headers)
        except TimeoutError as exc:
            raise httpx.WriteTimeout("sending to the receiver timed out") from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        try:
            response = conn.getresponse()
            drained = 0
            while chunk := response.read(65536):
                drained += len(chunk)
                if drained > _MAX_DRAIN:
                    return response.status, False
        except TimeoutError as exc:
            raise httpx.ReadTimeout("the receiver did not answer in time") from exc
        except (http.client.HTTPException, ValueError) as exc:
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        return response.status, not response.will_close

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
