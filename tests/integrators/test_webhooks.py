"""Webhooks from the integrator's side: subscribe, receive signed events, list and replay."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from core.app import create_app
from core.db import Database
from core.settings import Settings
from tests.conftest import LiveServer
from tests.factories import TenantWorld
from tests.integrators.conftest import Integrator, problem, register_client
from tests.integrators.receiver import Receiver, running_receiver, verify_signature

pytestmark = pytest.mark.usefixtures("quiet_webhooks")

COMPLAINT = {"type": "complaint", "channel": "api", "subject": "理赔款未到账"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An integrator's receiver on a loopback port (allowed outside production)."""
    with running_receiver() as sink:
        yield sink


@pytest.fixture(scope="module")
def integrator(
    api: httpx.Client, admin: dict[str, str], world: TenantWorld, live_server: LiveServer
) -> Integrator:
    """A core system filing cases at BJ."""
    return register_client(
        api,
        admin,
        live_server,
        scopes=["cases:read", "cases:write", "webhooks:admin"],
        unit_ids=[world.units["bj"].id],
    )


def subscribe(
    api: httpx.Client,
    headers: dict[str, str],
    receiver: Receiver,
    events: list[str],
    **more: object,
) -> dict[str, object]:
    """Subscribe ``receiver`` and give it the secret; return the subscription."""
    answer = api.post(
        "/api/v1/webhooks",
        headers=headers,
        json={"url": receiver.url, "event_types": events, **more},
    )
    assert answer.status_code == 201, answer.text
    receiver.secret = answer.json()["secret"]
    return dict(answer.json()["webhook"])


def wait_until(check: object, timeout: float = 20.0) -> object:
    """Poll ``check()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_a_new_complaint_reaches_the_receiver_signed(
    api: httpx.Client, integrator: Integrator, world: TenantWorld, receiver: Receiver
) -> None:
    hook = subscribe(api, integrator.headers, receiver, ["case.created", "case.transitioned"])
    assert hook["unit_ids"] == [str(world.units["bj"].id)]  # the integrator's own units
    created = api.post(
        "/api/v1/cases",
        headers=integrator.headers,
        json={**COMPLAINT, "unit_id": str(world.units["bj"].id)},
    )
    assert created.status_code == 201, created.text
    case = created.json()["case"]
    [got] = receiver.wait_for(1)
    assert got.verified, got.headers
    assert verify_signature(receiver.secret, got.headers, got.body)
    event = got.json
    assert event["type"] == "case.created" and event["tenant"] == world.tenant.slug
    assert event["data"]["case_id"] == case["id"] and event["data"]["number"] == case["number"]
    assert event["data"]["unit_id"] == str(world.units["bj"].id)
    uuid.UUID(event["id"])
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60

    # the delivery log says what happened, under the webhook-id the receiver saw
    deliveries = api.get(
        f"/api/v1/webhooks/{hook['id']}/deliveries", headers=integrator.headers
    ).json()["items"]
    sent = wait_until(
        lambda: [
            d
            for d in api.get(
                f"/api/v1/webhooks/{hook['id']}/deliveries", headers=integrator.headers
            ).json()["items"]
            if d["status"] == "sent"
        ]
    )
    assert sent[0]["id"] == got.headers["webhook-id"]  # type: ignore[index]
    assert sent[0]["event_id"] == event["id"] and sent[0]["attempts"] == 1  # type: ignore[index]
    assert sent[0]["history"][0]["status_code"] == 204  # type: ignore[index]
    assert deliveries[0]["payload"] == event

    # a transition is an event too
    moved = api.post(
        f"/api/v1/cases/{case['id']}/transitions",
        headers={**integrator.headers, "If-Match": created.headers["etag"]},
        json={
            "action": "request_materials",
            "missing_materials": ["发票"],
            "notice_channel": "sms",
        },
    )
    assert moved.status_code == 200, moved.text
    second = receiver.wait_for(2)[1]
    assert second.verified and second.json["type"] == "case.transitioned"
    assert second.json["data"]["to_state"] == "awaiting_materials"


def test_replay_and_ping(api: httpx.Client, integrator: Integrator, receiver: Receiver) -> None:
    hook = subscribe(api, integrator.headers, receiver, ["*"])
    ping = api.post(f"/api/v1/webhooks/{hook['id']}/ping", headers=integrator.headers)
    assert ping.status_code == 202, ping.text
    [first] = receiver.wait_for(1)
    assert first.verified and first.json["type"] == "webhook.ping"
    delivery = ping.json()["id"]
    url = f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery}"
    wait_until(lambda: api.get(url, headers=integrator.headers).json()["status"] == "sent")
    replayed = api.post(url + "/replay", headers=integrator.headers)
    assert replayed.status_code == 202 and replayed.json()["replays"] == 1
    second = receiver.wait_for(2)[1]
    # the same message (webhook-id and body), signed again
    assert second.verified and second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.body == first.body


def test_units_limit_what_a_subscription_gets(
    api: httpx.Client,
    admin: dict[str, str],
    integrator: Integrator,
    world: TenantWorld,
) -> None:
    with running_receiver() as bj, running_receiver() as sh:
        subscribe(api, admin, bj, ["case.created"], unit_ids=[str(world.units["bj"].id)])
        sh_hook = subscribe(api, admin, sh, ["case.created"], unit_ids=[str(world.units["sh"].id)])
        created = api.post(
            "/api/v1/cases",
            headers=integrator.headers,
            json={**COMPLAINT, "unit_id": str(world.units["bj"].id)},
        )
        assert created.status_code == 201
        bj.wait_for(1)
        time.sleep(0.5)
        assert sh.received == []
        listed = api.get(f"/api/v1/webhooks/{sh_hook['id']}/deliveries", headers=admin).json()
        assert listed["items"] == []
    # an integrator acting for BJ cannot subscribe to SH, nor see SH's subscription
    problem(
        api.post(
            "/api/v1/webhooks",
            headers=integrator.headers,
            json={
                "url": "http://127.0.0.1:9/x",
                "event_types": ["*"],
                "unit_ids": [str(world.units["sh"].id)],
            },
        ),
        403,
    )
    problem(api.get(f"/api/v1/webhooks/{sh_hook['id']}", headers=integrator.headers), 404)


def test_change_and_rotate_with_if_match(
    api: httpx.Client, integrator: Integrator, receiver: Receiver
) -> None:
    hook = subscribe(api, integrator.headers, receiver, ["case.created"])
    url = f"/api/v1/webhooks/{hook['id']}"
    etag = api.get(url, headers=integrator.headers).headers["etag"]
    problem(api.patch(url, headers=integrator.headers, json={"active": False}), 428)
    paused = api.patch(
        url, headers={**integrator.headers, "If-Match": etag}, json={"active": False}
    )
    assert paused.status_code == 200 and paused.json()["active"] is False
    problem(
        api.patch(url, headers={**integrator.headers, "If-Match": etag}, json={"active": True}), 412
    )
    problem(api.post(url + "/ping", headers=integrator.headers), 409)
    resumed = api.patch(
        url,
        headers={**integrator.headers, "If-Match": paused.headers["etag"]},
        json={"active": True},
    )
    assert resumed.status_code == 200
    old = receiver.secret
    rotated = api.post(url + "/secret", headers=integrator.headers)
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_")
    api.post(url + "/ping", headers=integrator.headers)
    [got] = receiver.wait_for(1)
    # during the grace period both secrets verify
    assert verify_signature(new, got.headers, got.body)
    assert verify_signature(old, got.headers, got.body)
    assert len(got.headers["webhook-signature"].split()) == 2


def test_the_event_catalogue(api: httpx.Client, integrator: Integrator) -> None:
    names = [
        e["name"] for e in api.get("/api/v1/webhook-event-types", headers=integrator.headers).json()
    ]
    assert {
        "case.created",
        "case.transitioned",
        "deadline.approaching",
        "deadline.breached",
        "visit.completed",
    } <= set(names)
    problem(
        api.post(
            "/api/v1/webhooks",
            headers=integrator.headers,
            json={"url": "http://127.0.0.1:9/x", "event_types": ["case.exploded"]},
        ),
        400,
    )


@pytest.fixture(scope="module")
def strict_app(app_settings: Settings, database: Database) -> Iterator[TestClient[Litestar]]:
    """The platform with production-like webhook rules (private addresses refused)."""
    app = create_app(replace(app_settings, webhook_allow_private=False), database)
    with TestClient(app, base_url=app_settings.issuer) as client:
        yield client


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://10.1.2.3/hooks",
        "http://192.168.0.10/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hooks",
        "http://[::ffff:127.0.0.1]/hooks",
        "http://100.64.0.1/hooks",
        "ftp://example.com/hooks",
        "http://user:pw@example.com/hooks",
    ],
)
def test_a_webhook_to_a_private_address_is_refused(
    strict_app: TestClient[Litestar], integrator: Integrator, url: str
) -> None:
    answer = strict_app.post(
        "/api/v1/webhooks",
        headers=integrator.headers,
        json={"url": url, "event_types": ["*"]},
    )
    body = problem(answer, 422)
    assert body["type"] == "/problems/webhook-url-refused"


def test_production_needs_https(
    app_settings: Settings, database: Database, integrator: Integrator
) -> None:
    app = create_app(replace(app_settings, environment="production"), database)
    with TestClient(app, base_url=app_settings.issuer) as client:
        answer = client.post(
            "/api/v1/webhooks",
            headers=integrator.headers,
            json={"url": "http://erp.example.com/hooks", "event_types": ["*"]},
        )
    assert problem(answer, 422)["detail"] == "webhook URLs must use https"
