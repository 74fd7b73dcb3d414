"""Safe writes from the integrator's side: Idempotency-Key on creates, ETag/If-Match on updates."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from core.api.idempotency import IdempotencyStore, fingerprint
from core.cases.models import Case
from core.db import Database
from tests.api.conftest import TokenFor, auth
from tests.conftest import LiveServer
from tests.factories import TenantWorld
from tests.integrators.conftest import Integrator, problem, register_client

pytestmark = pytest.mark.usefixtures("quiet_webhooks")


@pytest.fixture(scope="module")
def integrator(api: httpx.Client, admin: dict[str, str], live_server: LiveServer) -> Integrator:
    """A core system with write access to the whole tenant."""
    return register_client(
        api,
        admin,
        live_server,
        scopes=[
            "cases:read",
            "cases:write",
            "customers:read",
            "customers:write",
            "policies:write",
            "org:read",
            "org:write",
            "people:read",
            "people:write",
            "webhooks:admin",
            "clients:admin",
        ],
    )


def _complaint(world: TenantWorld, subject: str) -> dict[str, Any]:
    return {
        "type": "complaint",
        "channel": "api",
        "subject": subject,
        "unit_id": str(world.units["bj"].id),
    }


def _cases_with(database: Database, world: TenantWorld, subject: str) -> int:
    with database.tenant_session(world.id) as session:  # subjects are sealed: read each
        return sum(1 for case in session.scalars(select(Case)) if case.subject == subject)


def test_a_retried_create_happens_once(
    api: httpx.Client, integrator: Integrator, world: TenantWorld, database: Database
) -> None:
    subject = f"重复提交 {uuid.uuid4().hex[:6]}"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = api.post(
        "/api/v1/cases", headers={**integrator.headers, **key}, json=_complaint(world, subject)
    )
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    # the same request again (the client timed out and retries): the first answer, once more
    body = json.dumps(dict(reversed(list(_complaint(world, subject).items()))), indent=2)
    again = api.post(
        "/api/v1/cases",
        headers={**integrator.headers, **key, "content-type": "application/json"},
        content=body,
    )
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert _cases_with(database, world, subject) == 1
    # the same key with another request is refused
    other = api.post(
        "/api/v1/cases",
        headers={**integrator.headers, **key},
        json=_complaint(world, subject + "!"),
    )
    assert problem(other, 422)["type"] == "/problems/idempotency-key-reused"
    assert _cases_with(database, world, subject + "!") == 0


def test_kept_responses_are_sealed(
    api: httpx.Client, integrator: Integrator, world: TenantWorld, database: Database
) -> None:
    """The response kept for a replay is ciphertext in the table (it may hold personal data),
    and the replay is still byte for byte the first answer."""
    subject = f"身份证110101199003077777 {uuid.uuid4().hex[:6]}"
    key = str(uuid.uuid4())
    headers = {**integrator.headers, "Idempotency-Key": key}
    first = api.post("/api/v1/cases", headers=headers, json=_complaint(world, subject))
    assert first.status_code == 201, first.text
    with database.admin_engine.connect() as conn:
        kept = conn.execute(
            text("SELECT body FROM idempotency_keys WHERE key = :k"), {"k": key}
        ).scalar_one()
    raw = bytes(kept)
    assert raw.startswith(b"v") and first.json()["case"]["number"].encode() not in raw
    assert subject[-6:].encode() not in raw
    again = api.post("/api/v1/cases", headers=headers, json=_complaint(world, subject))
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


def test_keys_belong_to_one_caller(
    api: httpx.Client,
    integrator: Integrator,
    world: TenantWorld,
    database: Database,
    admin: dict[str, str],
    live_server: LiveServer,
) -> None:
    subject = f"各自的键 {uuid.uuid4().hex[:6]}"
    key = {"Idempotency-Key": "order-42"}
    second = register_client(api, admin, live_server, scopes=["cases:write", "cases:read"])
    for headers in (integrator.headers, second.headers, admin):
        answer = api.post(
            "/api/v1/cases", headers={**headers, **key}, json=_complaint(world, subject)
        )
        assert answer.status_code == 201 and "idempotent-replayed" not in answer.headers
    assert _cases_with(database, world, subject) == 3


def test_a_failed_first_request_frees_the_key(
    api: httpx.Client,
    integrator: Integrator,
    world: TenantWorld,
    other: TenantWorld,
    database: Database,
) -> None:
    subject = f"先错后对 {uuid.uuid4().hex[:6]}"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    wrong = {**_complaint(world, subject), "unit_id": str(other.units["bj"].id)}
    problem(api.post("/api/v1/cases", headers={**integrator.headers, **key}, json=wrong), 404)
    fixed = api.post(
        "/api/v1/cases", headers={**integrator.headers, **key}, json=_complaint(world, subject)
    )
    assert fixed.status_code == 201 and "idempotent-replayed" not in fixed.headers
    assert _cases_with(database, world, subject) == 1


def test_concurrent_retries_create_one_case(
    live_server: LiveServer, integrator: Integrator, world: TenantWorld, database: Database
) -> None:
    """Six copies of one keyed request, released together by a barrier (so they overlap however
    busy the machine is): one runs, the others get ``409 idempotency-key-in-use`` or, once it
    finished, its answer replayed. Every answer is checked in the test's thread, and the
    clients then retry their 409s as ``Retry-After`` says until each has the one case."""
    subject = f"并发重试 {uuid.uuid4().hex[:6]}"
    headers = {**integrator.headers, "Idempotency-Key": str(uuid.uuid4())}
    body = _complaint(world, subject)
    copies = 6
    barrier = threading.Barrier(copies)
    answers: list[httpx.Response | BaseException] = [RuntimeError("not sent")] * copies

    def send(i: int, http: httpx.Client) -> None:
        try:
            barrier.wait(timeout=60)
            answers[i] = http.post("/api/v1/cases", headers=headers, json=body)
        except BaseException as exc:  # reported by the test thread below
            answers[i] = exc

    clients = [httpx.Client(base_url=live_server.url, timeout=120) for _ in range(copies)]
    try:
        for http in clients:  # connect first: the barrier then releases only the requests
            assert http.get("/healthz").status_code == 200
        threads = [threading.Thread(target=send, args=(i, http)) for i, http in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not any(t.is_alive() for t in threads)
        ids: set[str] = set()
        firsts = 0
        for answer in answers:
            assert isinstance(answer, httpx.Response), repr(answer)
            if answer.status_code == 201:
                ids.add(answer.json()["case"]["id"])
                firsts += answer.headers.get("idempotent-replayed") != "true"
            else:
                assert answer.status_code == 409, answer.text
                assert answer.json()["type"] == "/problems/idempotency-key-in-use"
                assert answer.headers["retry-after"] == "1"
        assert firsts <= 1 and len(ids) <= 1
        # The clients told to retry do so (bounded), and get the same case, replayed.
        for i, answer in enumerate(answers):
            assert isinstance(answer, httpx.Response)
            for _ in range(60):
                if answer.status_code != 409:
                    break
                time.sleep(float(answer.headers["retry-after"]))
                answer = clients[i].post("/api/v1/cases", headers=headers, json=body)
            assert answer.status_code == 201, answer.text
            ids.add(answer.json()["case"]["id"])
        assert len(ids) == 1
    finally:
        for http in clients:
            http.close()
    assert _cases_with(database, world, subject) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/api/v1/customers",
            lambda w, n: {
                "kind": "policyholder",
                "name": f"客户{n}",
                "unit_id": str(w.units["bj"].id),
            },
        ),
        (
            "/api/v1/org-units",
            lambda w, n: {
                "code": f"U{n}",
                "name": f"营业部{n}",
                "kind": "sub_branch",
                "parent_id": str(w.units["bj"].id),
            },
        ),
        (
            "/api/v1/people",
            lambda w, n: {
                "username": f"p{n}",
                "display_name": f"员工{n}",
                "password": "a long enough password",
            },
        ),
        (
            "/api/v1/policies",
            lambda w, n: {
                "number": f"P-{n}",
                "product_code": "L01",
                "product_name": "终身寿险",
                "line_of_business": "life",
                "term_months": 12,
                "start_date": "2026-01-05",
                "unit_id": str(w.units["bj"].id),
                "policyholder_id": str(w.customers["bj"].id),
            },
        ),
        ("/api/v1/clients", lambda w, n: {"name": f"c{n}", "scopes": ["org:read"]}),
        (
            "/api/v1/webhooks",
            lambda w, n: {"url": f"http://127.0.0.1:9/{n}", "event_types": ["case.created"]},
        ),
    ],
)
def test_every_create_honours_the_key(
    api: httpx.Client, integrator: Integrator, world: TenantWorld, path: str, body: Any
) -> None:
    payload = body(world, uuid.uuid4().hex[:8])
    headers = {**integrator.headers, "Idempotency-Key": str(uuid.uuid4())}
    first = api.post(path, headers=headers, json=payload)
    assert first.status_code in (200, 201), first.text
    again = api.post(path, headers=headers, json=payload)
    assert again.status_code == first.status_code
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()


def test_an_upload_retried_with_another_boundary_is_replayed(
    api: httpx.Client, integrator: Integrator, world: TenantWorld
) -> None:
    created = api.post(
        "/api/v1/cases", headers=integrator.headers, json=_complaint(world, "附件重试")
    )
    url = f"/api/v1/cases/{created.json()['case']['id']}/attachments"
    headers = {**integrator.headers, "Idempotency-Key": str(uuid.uuid4())}
    pdf = b"%PDF-1.4\n% scan\n" + bytes(range(256)) * 4
    files = {"file": ("发票.pdf", pdf, "application/pdf")}
    first = api.post(url, headers=headers, files=files, data={"purpose": "material"})
    assert first.status_code == 201, first.text
    again = api.post(url, headers=headers, files=files, data={"purpose": "material"})
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()


@pytest.mark.parametrize("key", [b"", b"x" * 256, "键".encode(), b"a b"])
def test_a_malformed_key_is_a_400(api: httpx.Client, integrator: Integrator, key: bytes) -> None:
    answer = api.post(
        "/api/v1/clients",
        headers=[
            (b"Authorization", integrator.headers["Authorization"].encode()),
            (b"Idempotency-Key", key),
        ],
        json={"name": "x", "scopes": ["org:read"]},
    )
    assert problem(answer, 400)["type"] == "/problems/invalid-idempotency-key"


def test_keys_expire(database: Database, world: TenantWorld) -> None:
    store = IdempotencyStore(database, timedelta(seconds=-1))  # already expired when stored
    print_ = fingerprint("POST", "/api/v1/x", "", "application/json", b"{}")
    first = store.begin(world.id, "t.client", "k-expire", print_, "POST", "/api/v1/x")
    assert first.action == "run" and first.record_id is not None
    store.complete(world.id, first.record_id, 201, [("content-type", "application/json")], b"{}")
    assert store.begin(world.id, "t.client", "k-expire", print_, "POST", "/api/v1/x").action == (
        "run"
    )
    fresh = IdempotencyStore(database, timedelta(hours=24))
    again = fresh.begin(world.id, "t.client", "k-keep", print_, "POST", "/api/v1/x")
    assert again.record_id is not None
    fresh.complete(world.id, again.record_id, 201, [], b"{}")
    assert fresh.begin(world.id, "t.client", "k-keep", print_, "POST", "/api/v1/x").action == (
        "replay"
    )


# -- optimistic concurrency ---------------------------------------------------------------------


def test_a_stale_customer_update_is_a_412_never_a_lost_update(
    api: httpx.Client, integrator: Integrator, world: TenantWorld, person_token: TokenFor
) -> None:
    url = f"/api/v1/customers/{world.customers['sh'].id}"
    read = api.get(url, headers=integrator.headers)
    etag = read.headers["etag"]
    problem(api.patch(url, headers=integrator.headers, json={"address": "上海"}), 428)
    first = api.patch(
        url, headers={**integrator.headers, "If-Match": etag}, json={"address": "上海市浦东新区"}
    )
    assert first.status_code == 200, first.text
    assert first.headers["etag"] != etag
    # a second writer who read the same version is told, and nothing is overwritten
    stale = problem(
        api.patch(
            url, headers={**integrator.headers, "If-Match": etag}, json={"address": "旧地址"}
        ),
        412,
    )
    assert stale["type"] == "/problems/stale-version"
    assert api.get(url, headers=integrator.headers).json()["address"] == "上海市浦东新区"
    assert api.get(url, headers=integrator.headers).headers["etag"] == first.headers["etag"]
    # the console (a person's token) may omit If-Match
    admin = auth(person_token(world, "admin"))
    assert api.patch(url, headers=admin, json={"address": "上海"}).status_code == 200


def test_two_writers_with_the_same_etag_one_wins(
    live_server: LiveServer, integrator: Integrator, world: TenantWorld
) -> None:
    url = f"/api/v1/customers/{world.customers['bj'].id}"
    with httpx.Client(base_url=live_server.url, timeout=20) as http:
        etag = http.get(url, headers=integrator.headers).headers["etag"]
    results: list[int] = []

    def write(n: int) -> None:
        with httpx.Client(base_url=live_server.url, timeout=20) as http:
            answer = http.patch(
                url, headers={**integrator.headers, "If-Match": etag}, json={"address": f"北京 {n}"}
            )
            results.append(answer.status_code)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count(200) == 1, results
    assert all(r in (200, 412, 503) for r in results), results


def test_a_stale_person_update_is_a_412(
    api: httpx.Client, integrator: Integrator, world: TenantWorld
) -> None:
    url = f"/api/v1/people/{world.people['auditor'].id}"
    etag = api.get(url, headers=integrator.headers).headers["etag"]
    problem(api.patch(url, headers=integrator.headers, json={"phone": "010-1234567"}), 428)
    changed = api.patch(
        url, headers={**integrator.headers, "If-Match": etag}, json={"phone": "010-1234567"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] != etag
    stale = api.patch(
        url, headers={**integrator.headers, "If-Match": etag}, json={"phone": "010-7654321"}
    )
    problem(stale, 412)
    assert api.get(url, headers=integrator.headers).json()["phone"] == "010-1234567"
