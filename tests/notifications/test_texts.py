"""Masking, templates (sandboxed Jinja2, zh-CN and en, tenant overrides) and routing."""

from __future__ import annotations

import pytest

from core.db import Database
from core.notifications.masking import mask_address, mask_email, mask_phone, recipient_key
from core.notifications.routing import audiences
from core.notifications.services import put_template
from core.notifications.templates import (
    Renderer,
    TemplateRenderError,
    TemplateText,
    builtin_template,
    load_templates,
    normalize_language,
)
from tests.factories import TenantWorld


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+8613812345678", "+86 138****5678"),
        ("zhang.san@example.com", "z***@example.com"),
        ("mailto:Li@Example.com", "L***@Example.com"),
        ("https://hooks.example.com/bot/send?access_token=secret", "https://hooks.example.com/…"),
        ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080/…"),
    ],
)
def test_recipients_are_masked(address: str, masked: str) -> None:
    assert mask_address(address) == masked


def test_masks_hide_the_middle_and_keys_hide_everything() -> None:
    assert mask_phone("021-6234 5678") == "021****5678"
    assert mask_email("a@b.cn") == "a***@b.cn"
    assert recipient_key("email", "A@B.cn") == recipient_key("email", "a@b.cn")
    assert "a@b.cn" not in recipient_key("email", "a@b.cn")


def test_builtin_templates_exist_in_chinese_and_english() -> None:
    renderer = Renderer()
    context = {
        "case": {
            "number": "TS-2026-000123",
            "subject": "理赔慢",
            "type_zh": "投诉",
            "type_en": "complaint",
        },
        "recipient": {"name": "张三", "audience": "customer"},
    }
    zh = renderer.render(builtin_template("case.created", "zh-CN"), context)
    en = renderer.render(builtin_template("case.created", "en"), context)
    assert zh[0] == "【TS-2026-000123】已受理：理赔慢"
    assert "我们已收到您的投诉" in zh[1]
    assert en[0] == "[TS-2026-000123] Received: 理赔慢"
    assert "We have received your complaint" in en[1]
    generic = renderer.render(
        builtin_template("something.else", "en"),
        {"event": "something.else", "recipient": {"name": "Li"}},
    )
    assert generic[0] == "Notification: something.else"


def test_templates_run_in_a_sandbox() -> None:
    renderer = Renderer()
    escape = TemplateText("{{ ''.__class__.__mro__[1].__subclasses__() }}", "x")
    with pytest.raises(TemplateRenderError, match="the template failed"):
        renderer.render(escape, {})
    with pytest.raises(TemplateRenderError, match="does not compile"):
        renderer.render(TemplateText("{% if %}", "x"), {})
    # A missing value renders empty instead of failing a notification.
    assert renderer.render(TemplateText("{{ case.missing.deeper }}!", "b"), {}) == ("!", "b")


def test_a_tenant_override_wins_for_its_language_and_channel(
    bg_db: Database, world: TenantWorld
) -> None:
    with bg_db.tenant_transaction(world.id) as session:
        put_template(
            session,
            event_type="deadline.reminder",
            language="en",
            channel="*",
            subject="Due soon",
            body="b",
            actor="test",
        )
        put_template(
            session,
            event_type="deadline.reminder",
            language="en",
            channel="sms",
            subject="SMS due",
            body="b",
            actor="test",
        )
        chosen = load_templates(session, "deadline.reminder")
    assert chosen.choose("en", "email").subject == "Due soon"
    assert chosen.choose("en", "sms").subject == "SMS due"
    assert chosen.choose("zh-CN", "email") == builtin_template("deadline.reminder", "zh-CN")


@pytest.mark.parametrize(
    ("value", "language"),
    [(None, "zh-CN"), ("zh", "zh-CN"), ("zh_CN", "zh-CN"), ("en-US", "en"), ("fr", "zh-CN")],
)
def test_languages_are_normalized(value: str | None, language: str) -> None:
    assert normalize_language(value) == language


def test_routing_sends_each_event_to_its_audiences() -> None:
    assert audiences("case.created", {}) == ("handler", "customer", "endpoint")
    assert audiences("deadline.breached", {}) == ("handler", "manager", "cs_division", "endpoint")
    assert audiences("case.transitioned", {"to_state": "decided"}) == (
        "handler",
        "customer",
        "endpoint",
    )
    assert audiences("case.transitioned", {"to_state": "in_progress"}) == ("handler", "endpoint")
    assert audiences("case.note_added", {"contacts": ["a@b.cn"]}) == ("endpoint", "contacts")
