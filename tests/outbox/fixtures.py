"""Fixtures of the background-work tests (outbox, notifications, scheduler), shared by their
``conftest.py`` files.

The tests run on a database of their own per backend (not the session's shared one), so
the embedded worker of a live server started by other tests never touches their rows. Real
servers receive what is sent: an SMTP server (aiosmtpd) and an HTTP server that verifies
webhook signatures. Brokers are the real RabbitMQ and Redis of this machine, each test run
in its own namespace (queue names / key prefix), deleted afterwards; with ``CI=true`` a
missing broker fails the test instead of skipping it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
from sqlalchemy import update

from core.customers.models import ContactChannel, Customer
from core.db import Database
from core.migrate import upgrade
from core.notifications.channels import ResolvedChannel, StaticChannels
from core.people.models import Person
from core.settings import Settings
from plugins.email_smtp import EmailChannel
from plugins.webhook import WebhookChannel, verify
from tests.conftest import CI, PostgresDatabases, make_settings
from tests.factories import TenantWorld, make_tenant

T = TypeVar("T")

RABBITMQ_URL = os.environ.get("INSURDESK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("INSURDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"insurdesk-test-secret-32-bytes!!").decode()


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _require(name: str, reason: str | None) -> None:
    if reason:
        if CI:
            pytest.fail(f"CI=true and the {name} service is missing: {reason}")
        pytest.skip(reason)


def rabbitmq_problem() -> str | None:
    """Why RabbitMQ cannot be used, or None."""
    import pika

    try:
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        connection.close()
        return None
    except Exception as exc:  # the reason goes into the skip or failure message
        return f"RabbitMQ not reachable at {RABBITMQ_URL}: {type(exc).__name__}: {exc}"


def redis_problem() -> str | None:
    """Why Redis cannot be used, or None."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
        return None
    except Exception as exc:  # the reason goes into the skip or failure message
        return f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def require_rabbitmq() -> str:
    """The RabbitMQ URL (skips without RabbitMQ; fails with CI=true)."""
    _require("RabbitMQ", rabbitmq_problem())
    return RABBITMQ_URL


@pytest.fixture(scope="session")
def require_redis() -> str:
    """The Redis URL (skips without Redis; fails with CI=true)."""
    _require("Redis", redis_problem())
    return REDIS_URL


def delete_namespace(kind: str, namespace: str) -> None:
    """Remove what a test run left on a broker: its queues (RabbitMQ) or keys (Redis)."""
    if kind == "rabbitmq":
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        try:
            channel = connection.channel()
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(f"{namespace}.outbox{suffix}")
        finally:
            connection.close()
    elif kind == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{namespace}:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> Iterator[str]:
    """A broker namespace of this test alone; its queues and keys are deleted afterwards."""
    name = f"insurdesk-test-{uuid.uuid4().hex[:10]}"
    yield name
    for kind, problem in (("rabbitmq", rabbitmq_problem), ("redis", redis_problem)):
        if problem() is None:
            delete_namespace(kind, name)


# -- databases --------------------------------------------------------------------------------


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def bg_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings for a migrated database of the background tests' own, per backend."""
    tmp = tmp_path_factory.mktemp(f"bg-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'bg.db'}"
        upgrade(url)
        return make_settings(tmp, url)
    dbs: PostgresDatabases = request.getfixturevalue("pg_databases")
    admin, app = dbs.create()
    upgrade(admin, app)
    return make_settings(tmp, app, admin)


@pytest.fixture(scope="session")
def bg_db(bg_settings: Settings) -> Iterator[Database]:
    """The background tests' database (both backends)."""
    db = Database(bg_settings.effective_database_url, bg_settings.effective_admin_database_url)
    yield db
    db.dispose()


def reachable_world(db: Database, prefix: str = "bg") -> TenantWorld:
    """A tenant whose people have e-mail addresses and whose bj customer prefers e-mail."""
    world = make_tenant(db, prefix)
    with db.tenant_transaction(world.id) as session:
        for username, person in world.people.items():
            session.execute(
                update(Person)
                .where(Person.id == person.id)
                .values(email=f"{username}@{world.tenant.slug}.example.com")
            )
        customer = session.get_one(Customer, (world.id, world.customers["bj"].id))
        customer.email = f"customer.bj@{world.tenant.slug}.example.com"  # encrypted on flush
        customer.preferred_channel = ContactChannel.EMAIL
    return world


@pytest.fixture
def world(bg_db: Database) -> TenantWorld:
    """A fresh tenant in the background tests' database, with reachable people."""
    return reachable_world(bg_db)


# -- receiving servers ------------------------------------------------------------------------


@dataclass
class ReceivedMail:
    """One e-mail the SMTP server received."""

    rcpt: list[str]
    message_id: str
    subject: str
    raw: bytes

    @property
    def text(self) -> str:
        """The decoded plain-text body."""
        from email import message_from_bytes, policy

        message = message_from_bytes(self.raw, policy=policy.default)
        body = message.get_body(("plain",))
        return str(body.get_content()) if body is not None else ""


class SmtpSink:
    """A real SMTP server (aiosmtpd) on a free port that keeps what it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.messages: list[ReceivedMail] = []
        self.lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                from email import message_from_bytes
                from email.header import decode_header, make_header

                raw = envelope.original_content or envelope.content
                parsed = message_from_bytes(raw)
                subject = str(make_header(decode_header(parsed.get("Subject", ""))))
                with sink.lock:
                    sink.messages.append(
                        ReceivedMail(list(envelope.rcpt_tos), parsed["Message-ID"], subject, raw)
                    )
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def settings(self) -> dict[str, Any]:
        """``email_smtp`` plugin settings pointing at this server."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "security": "none",
            "from_address": "service@insurer.example.com",
            "from_name": "客户服务中心",
        }


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A running SMTP server that records the messages it receives."""
    sink = SmtpSink()
    sink.controller.start()
    yield sink
    sink.controller.stop()


@dataclass
class ReceivedHook:
    """One webhook request, with whether its signature verified."""

    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def id(self) -> str:
        """The ``webhook-id`` header (the delivery's idempotency key)."""
        return self.headers.get("webhook-id", "")

    @property
    def json(self) -> Any:
        """The decoded body."""
        return json.loads(self.body)

    @property
    def type(self) -> str:
        """The event type the body carries."""
        return str(self.json.get("type", ""))


@dataclass
class WebhookSink:
    """A real HTTP server that receives webhooks and verifies their signatures."""

    secret: str = WEBHOOK_SECRET
    received: list[ReceivedHook] = field(default_factory=list)
    fail_with: int | None = None
    """Answer this status instead of 204 (to test retries)."""
    delay: float = 0.0
    """Seconds to take over each request (a slow receiver)."""
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """Where to send webhooks."""
        return f"http://127.0.0.1:{self.port}/hooks/insurdesk"

    def settings(self, events: list[str] | None = None) -> dict[str, Any]:
        """``webhook`` plugin settings pointing at this server."""
        return {"url": self.url, "secret": self.secret, "events": events or ["*"]}

    def of(self, *event_types: str) -> list[ReceivedHook]:
        """The requests received for these event types, in arrival order.

        Tests count by event type, never everything: a tenant's other events (e.g. the
        ``plugin.settings_changed`` its factory's plugin set-up emits) reach the same endpoint.
        """
        with self.lock:
            return [h for h in self.received if h.type in event_types]

    def unique_ids(self, *event_types: str) -> set[str]:
        """The distinct ``webhook-id`` values received (what a deduplicating receiver keeps),
        of these event types (all when none are named)."""
        with self.lock:
            return {h.id for h in self.received if not event_types or h.type in event_types}


@pytest.fixture
def webhooks() -> Iterator[WebhookSink]:
    """A running webhook receiver that verifies each request's signature."""
    sink = WebhookSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if sink.delay:
                time.sleep(sink.delay)
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            ok = verify(sink.secret, headers, body)
            status = sink.fail_with or (204 if ok else 401)
            if sink.fail_with is None:
                with sink.lock:
                    sink.received.append(ReceivedHook(headers, body, ok))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield sink
    server.shutdown()
    server.server_close()


def local_channels(smtp: SmtpSink | None, webhooks: WebhookSink | None) -> StaticChannels:
    """The real ``email`` and ``webhook`` channels of the built-in plugins, configured for
    the local servers."""
    found = []
    if smtp is not None:
        settings = {"from_name": "客户服务中心", **smtp.settings()}
        found.append(ResolvedChannel(EmailChannel(settings), "email_smtp", settings))
    if webhooks is not None:
        settings = webhooks.settings()
        found.append(ResolvedChannel(WebhookChannel(settings), "webhook", settings))
    return StaticChannels(found)


def wait_until(condition: Any, timeout: float = 60.0, interval: float = 0.05) -> None:
    """Poll ``condition()`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s: {condition}")


class TcpProxy:
    """A TCP forwarder to ``target``: ``down()`` makes its port refuse connections (a dead
    broker as the relay sees it), ``up()`` forwards again on the same port."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        """Start accepting and forwarding."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def must_get(session: Any, model: type[T], tenant_id: uuid.UUID, row_id: uuid.UUID | None) -> T:
    """The ``model`` row with that key; fails the test when there is none."""
    assert row_id is not None
    found = session.get(model, (tenant_id, row_id))
    assert found is not None, f"no {model.__name__} {row_id}"
    return found
