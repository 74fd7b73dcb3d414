"""Notification templates: built-in wording per event and language, tenant overrides, rendering.

Templates are Jinja2, rendered in a :class:`~jinja2.sandbox.SandboxedEnvironment` (a tenant
admin writes them: no attribute access to internals, no callables beyond the filters) with
plain-text output. The context holds data, never ORM objects:

``event`` (type), ``payload`` (the outbox payload), ``case`` (number, subject, type, state,
received_at, unit), ``clock`` (name, due_at, citation), ``recipient`` (name, audience),
``tenant`` (name), ``cases`` (digest rows).

Which template applies, first match wins: the tenant's for (event, language, channel), the
tenant's for (event, language, ``*``), the built-in for (event, language), the built-in for
(event, ``zh-CN``), the generic built-in for the language.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.notifications.models import NotificationTemplate

LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"
GENERIC = "*"


@dataclass(frozen=True)
class TemplateText:
    """A subject and a body (Jinja2 sources)."""

    subject: str
    body: str


_ZH: dict[str, TemplateText] = {
    "case.created": TemplateText(
        "【{{ case.number }}】已受理：{{ case.subject }}",
        "{{ recipient.name }}，您好：\n\n"
        "{% if recipient.audience == 'customer' %}我们已收到您的{{ case.type_zh }}"
        "（编号 {{ case.number }}），将按规定时限处理并答复您。"
        "{% else %}新案件 {{ case.number }}（{{ case.type_zh }}）已登记，"
        "由您经办：{{ case.subject }}。{% endif %}\n",
    ),
    "case.assigned": TemplateText(
        "【{{ case.number }}】已分配给您",
        "{{ recipient.name }}，您好：\n\n"
        "案件 {{ case.number }}（{{ case.subject }}）已分配给您办理。\n",
    ),
    "case.transitioned": TemplateText(
        "【{{ case.number }}】状态更新：{{ payload.to_state }}",
        "{{ recipient.name }}，您好：\n\n案件 {{ case.number }} 的状态已由 "
        "{{ payload.from_state }} 变更为 {{ payload.to_state }}。\n"
        "{% if payload.reason %}说明：{{ payload.reason }}\n{% endif %}",
    ),
    "case.materials_missing": TemplateText(
        "【{{ case.number }}】请补充材料",
        "{{ recipient.name }}，您好：\n\n为处理您的{{ case.type_zh }}（编号 {{ case.number }}），"
        "请补充以下材料：\n{% for m in payload.materials %}- {{ m }}\n{% endfor %}",
    ),
    "case.clock_extended": TemplateText(
        "【{{ case.number }}】办理时限已延长",
        "{{ recipient.name }}，您好：\n\n{% if recipient.audience == 'customer' %}"
        "因情况复杂，您的{{ case.type_zh }}（编号 {{ case.number }}）的处理时限已依规延长"
        "{% if payload.to %}至 {{ payload.to }} 日{% endif %}。{% else %}"
        "案件 {{ case.number }} 的时限「{{ payload.clock }}」已延长"
        "{% if payload.to %}至 {{ payload.to }} 日{% endif %}。{% endif %}\n",
    ),
    "case.follow_up": TemplateText(
        "【{{ case.number }}】{{ payload.kind }}",
        "{{ recipient.name }}，您好：\n\n案件 {{ case.number }}（{{ case.subject }}）："
        "{% for n in payload.notes %}{{ n }}；{% endfor %}\n",
    ),
    "deadline.reminder": TemplateText(
        "【时限提醒】{{ case.number }} 将于 {{ clock.due_local }} 到期",
        "{{ recipient.name }}，您好：\n\n案件 {{ case.number }}（{{ case.subject }}）的时限"
        "「{{ clock.name }}」将于 {{ clock.due_local }} 到期（依据：{{ clock.citation }}），"
        "请及时处理。\n",
    ),
    "deadline.breached": TemplateText(
        "【超时升级】{{ case.number }} 已超过办理时限",
        "{{ recipient.name }}，您好：\n\n案件 {{ case.number }}（{{ case.subject }}，"
        "{{ case.unit }}）的时限「{{ clock.name }}」已于 {{ clock.due_local }} 到期仍未办结"
        "（依据：{{ clock.citation }}）。{% if recipient.audience != 'handler' %}"
        "现按规定向您升级报告。{% endif %}\n",
    ),
    "digest.daily": TemplateText(
        "【每日汇总】{{ payload.unit_name }}：{{ cases | length }} 件临近或超过时限",
        "{{ recipient.name }}，您好：\n\n{{ payload.unit_name }} 临近或超过时限的案件：\n"
        "{% for c in cases %}- {{ c.number }} {{ c.clock }} 到期 {{ c.due_local }}"
        "{% if c.breached %}（已超时）{% endif %}\n{% endfor %}",
    ),
    "plugin.settings_changed": TemplateText(
        "插件设置已变更：{{ payload.plugin }}",
        "插件 {{ payload.plugin }} 在机构 {{ payload.unit_code }} 的设置已由 "
        "{{ payload.changed_by }} 变更（版本 {{ payload.version }}）。\n",
    ),
    GENERIC: TemplateText(
        "通知：{{ event }}",
        "{{ recipient.name }}，您好：\n\n事件 {{ event }}。\n",
    ),
}

_EN: dict[str, TemplateText] = {
    "case.created": TemplateText(
        "[{{ case.number }}] Received: {{ case.subject }}",
        "Dear {{ recipient.name }},\n\n"
        "{% if recipient.audience == 'customer' %}We have received your {{ case.type_en }} "
        "(reference {{ case.number }}) and will answer you within the time the rules set."
        "{% else %}New case {{ case.number }} ({{ case.type_en }}) is registered and assigned "
        "to you: {{ case.subject }}.{% endif %}\n",
    ),
    "case.assigned": TemplateText(
        "[{{ case.number }}] Assigned to you",
        "Dear {{ recipient.name }},\n\nCase {{ case.number }} ({{ case.subject }}) is now "
        "assigned to you.\n",
    ),
    "case.transitioned": TemplateText(
        "[{{ case.number }}] Now {{ payload.to_state }}",
        "Dear {{ recipient.name }},\n\nCase {{ case.number }} moved from "
        "{{ payload.from_state }} to {{ payload.to_state }}.\n"
        "{% if payload.reason %}Note: {{ payload.reason }}\n{% endif %}",
    ),
    "case.materials_missing": TemplateText(
        "[{{ case.number }}] Materials needed",
        "Dear {{ recipient.name }},\n\nTo handle your {{ case.type_en }} (reference "
        "{{ case.number }}) we need:\n{% for m in payload.materials %}- {{ m }}\n{% endfor %}",
    ),
    "case.clock_extended": TemplateText(
        "[{{ case.number }}] Time limit extended",
        "Dear {{ recipient.name }},\n\n{% if recipient.audience == 'customer' %}"
        "Because it is complex, the time to handle your {{ case.type_en }} (reference "
        "{{ case.number }}) is extended as the rules allow"
        "{% if payload.to %} to {{ payload.to }} days{% endif %}.{% else %}"
        "The {{ payload.clock }} time limit of case {{ case.number }} is extended"
        "{% if payload.to %} to {{ payload.to }} days{% endif %}.{% endif %}\n",
    ),
    "case.follow_up": TemplateText(
        "[{{ case.number }}] {{ payload.kind }}",
        "Dear {{ recipient.name }},\n\nCase {{ case.number }} ({{ case.subject }}): "
        "{% for n in payload.notes %}{{ n }}; {% endfor %}\n",
    ),
    "deadline.reminder": TemplateText(
        "[Reminder] {{ case.number }} is due {{ clock.due_local }}",
        "Dear {{ recipient.name }},\n\nThe {{ clock.name }} deadline of case {{ case.number }} "
        "({{ case.subject }}) falls due at {{ clock.due_local }} ({{ clock.citation }}).\n",
    ),
    "deadline.breached": TemplateText(
        "[Escalation] {{ case.number }} is past its deadline",
        "Dear {{ recipient.name }},\n\nThe {{ clock.name }} deadline of case {{ case.number }} "
        "({{ case.subject }}, {{ case.unit }}) passed at {{ clock.due_local }} "
        "({{ clock.citation }}).{% if recipient.audience != 'handler' %} It is escalated to "
        "you as the rules require.{% endif %}\n",
    ),
    "digest.daily": TemplateText(
        "[Daily digest] {{ payload.unit_name }}: {{ cases | length }} cases near or past due",
        "Dear {{ recipient.name }},\n\nCases of {{ payload.unit_name }} near or past their "
        "deadlines:\n{% for c in cases %}- {{ c.number }} {{ c.clock }} due {{ c.due_local }}"
        "{% if c.breached %} (BREACHED){% endif %}\n{% endfor %}",
    ),
    "plugin.settings_changed": TemplateText(
        "Plugin settings changed: {{ payload.plugin }}",
        "The settings of plugin {{ payload.plugin }} at unit {{ payload.unit_code }} were "
        "changed by {{ payload.changed_by }} (version {{ payload.version }}).\n",
    ),
    GENERIC: TemplateText(
        "Notification: {{ event }}",
        "Dear {{ recipient.name }},\n\nEvent {{ event }}.\n",
    ),
}

BUILTIN: Mapping[str, Mapping[str, TemplateText]] = {"zh-CN": _ZH, "en": _EN}
"""The built-in templates, by language then event type (``*``: any other event)."""


class TemplateRenderError(ValueError):
    """A template does not compile or fails to render; the message says which and why."""


class Renderer:
    """Compiles templates once (bounded cache) and renders them in the sandbox."""

    def __init__(self, cache_size: int = 512) -> None:
        self.env = SandboxedEnvironment(
            autoescape=False, undefined=ChainableUndefined, keep_trailing_newline=True
        )
        self._cache: OrderedDict[str, Template] = OrderedDict()
        self._globals: dict[int, dict[str, Any]] = {}
        """Per compiled template (by id, dropped with it): its globals as one plain dict."""
        self._size = cache_size
        self._lock = threading.Lock()

    def compile(self, source: str) -> Template:
        """The compiled template of ``source``; raises :class:`TemplateRenderError`."""
        with self._lock:
            found = self._cache.get(source)
            if found is not None:
                self._cache.move_to_end(source)
                return found
        try:
            compiled = self.env.from_string(source)
        except TemplateError as exc:
            raise TemplateRenderError(f"the template does not compile: {exc}") from exc
        flat = dict(compiled.globals)
        with self._lock:
            self._cache[source] = compiled
            self._globals[id(compiled)] = flat
            while len(self._cache) > self._size:
                _, dropped = self._cache.popitem(last=False)
                self._globals.pop(id(dropped), None)
        return compiled

    def _render(self, template: Template, context: Mapping[str, Any]) -> str:
        """``template.render(context)`` without its per-call copy of the globals.

        ``Template.render`` merges the template's globals (a ``ChainMap`` over the
        environment's, iterated key by key in Python) into a new dict on every call, which cost
        more than rendering a short notification; here the globals are flattened once per
        compiled template and the context is built from that dict. The sandbox is in the
        compiled code, so it applies the same.
        """
        flat = self._globals.get(id(template))
        if flat is None:  # not compiled here (cannot happen through render)
            return template.render(context)
        ctx = template.new_context({**flat, **context}, shared=True)
        return str(self.env.concat(template.root_render_func(ctx)))

    def render(self, text: TemplateText, context: Mapping[str, Any]) -> tuple[str, str]:
        """``(subject, body)``; the subject is one line of at most 300 characters."""
        try:
            subject = self._render(self.compile(text.subject), context)
            body = self._render(self.compile(text.body), context)
        except TemplateRenderError:
            raise
        except Exception as exc:  # sandbox violations, type errors in a tenant's template
            raise TemplateRenderError(f"the template failed: {type(exc).__name__}: {exc}") from exc
        return " ".join(subject.split())[:300], body


def builtin_template(event_type: str, language: str) -> TemplateText:
    """The built-in template for ``event_type`` in ``language`` (see the module docstring)."""
    by_event = BUILTIN.get(language) or BUILTIN[DEFAULT_LANGUAGE]
    return (
        by_event.get(event_type) or BUILTIN[DEFAULT_LANGUAGE].get(event_type) or by_event[GENERIC]
    )


@dataclass(frozen=True)
class TemplateSet:
    """The tenant's overrides for one event type, and the choice among them."""

    event_type: str
    overrides: Mapping[tuple[str, str], TemplateText]
    """By ``(language, channel)``."""

    def choose(self, language: str, channel: str) -> TemplateText:
        """The template for ``language`` and ``channel`` (see the module docstring)."""
        return (
            self.overrides.get((language, channel))
            or self.overrides.get((language, GENERIC))
            or builtin_template(self.event_type, language)
        )


def load_templates(session: Session, event_type: str) -> TemplateSet:
    """The session tenant's overrides for ``event_type`` (one indexed query)."""
    rows = session.scalars(
        select(NotificationTemplate).where(NotificationTemplate.event_type == event_type)
    ).all()
    return TemplateSet(
        event_type, {(r.language, r.channel): TemplateText(r.subject, r.body) for r in rows}
    )


def normalize_language(value: str | None) -> str:
    """``zh``, ``zh-cn``, ``zh_CN`` → ``zh-CN``; ``en-US`` → ``en``; anything else → zh-CN."""
    if not value:
        return DEFAULT_LANGUAGE
    lowered = value.replace("_", "-").lower()
    if lowered.startswith("en"):
        return "en"
    return DEFAULT_LANGUAGE
