"""service_rules_cn — the model company rules of the seed documents.

On by default for every tenant (nothing to provision: it is enabled unless a tenant admin
disables it at some unit), and configurable. It implements:

* 客户服务管理规定 第十二条: a complaint whose materials are incomplete — tell the complainant
  within 5 working days of receipt what to add (``complaint.missing_materials_notice``);
* 客户服务管理规定 第十三条: a complaint transferred by the regulator gets a written report in the
  form the regulator asks (a ``regulator_report`` follow-up);
* 客户服务管理规定 第五条(五) and 第五章: a callback visit after every closed complaint;
* 客服中心服务质量检查管理办法 第九条: periodic inspections at least every half-year; 第十条: an
  ad-hoc inspection after a complaint; 第六条 and the service-staff rules (服务人员规范): the
  rubric items;
* optionally, 人身保险业务基本服务规定 第二十九条: answer a life-insurance complaint within 10
  working days (the 2020 rules prevail, so it is a company's choice, off by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.hookspecs import (
    CaseFacts,
    DeadlineRule,
    FollowUp,
    InspectionSchedule,
    Period,
    PluginInfo,
    RubricItem,
    UnitFacts,
    VisitQuota,
    hookimpl,
)

NAME = "service_rules_cn"
RULES = "seed:客户服务管理规定"
INSPECTIONS = "seed:客服中心服务质量检查管理办法"
STAFF = "seed:保险公司客户服务人员的服务规范"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "missing_materials_notice_working_days": {
            "type": "integer",
            "minimum": 1,
            "maximum": 5,
            "default": 5,
            "description": "投诉材料不完整的，自收到材料之日起N个工作日内通知投诉人补充"
            " (第十二条: 5)",
        },
        "callback_after_closed_complaint": {
            "type": "boolean",
            "default": True,
            "description": "投诉办结后回访 / a callback visit after every closed complaint",
        },
        "callback_within_working_days": {
            "type": "integer",
            "minimum": 1,
            "maximum": 30,
            "default": 5,
            "description": "回访期限（工作日）/ working days to make the callback",
        },
        "inspection_interval_months": {
            "type": "integer",
            "minimum": 1,
            "maximum": 6,
            "default": 6,
            "description": "定期检查周期（月），不少于半年一次 (质检办法 第九条)",
        },
        "adhoc_inspection_after_complaint": {
            "type": "boolean",
            "default": True,
            "description": "接到消费者投诉后进行临时检查 (质检办法 第十条)",
        },
        "life_complaint_answer_10_working_days": {
            "type": "boolean",
            "default": False,
            "description": "人身保险投诉自受理之日起10个工作日内答复 (2010 服务规定 第二十九条)",
        },
    },
}

INFO = PluginInfo(
    version="1.0.0",
    title_zh="客户服务管理规定（示范公司制度）",
    title_en="Company customer-service rules (model)",
    description_zh="种子文档中的公司制度：投诉材料不全5个工作日内告知、监管转办书面报告、投诉办结回访、"
    "半年一次定期质检与投诉后临时质检。新租户默认启用，可配置。",
    description_en="The model company rules of the seed documents: missing complaint materials "
    "notified within 5 working days, written reports on regulator transfers, a callback after "
    "every closed complaint, inspections at least every half-year and after complaints. On by "
    "default for a new tenant; configurable.",
    kind="policy",
    citations=(f"{RULES}/12", f"{RULES}/13", f"{RULES}/5", f"{INSPECTIONS}/9", f"{INSPECTIONS}/10"),
)

RUBRIC: tuple[tuple[str, str, str, int, str], ...] = (
    (
        "courtesy",
        "专业礼仪：仪态、自我介绍、礼貌用语",
        "Courtesy and professional manner",
        15,
        f"{STAFF}/I",
    ),
    ("knowledge", "专业知识和技能：产品解释准确、解答清晰", "Product knowledge", 20, f"{STAFF}/II"),
    (
        "timeliness",
        "处理及时性、结果明确性",
        "Timely handling and a clear result",
        25,
        f"{RULES}/9",
    ),
    (
        "follow_up",
        "客户关系管理：及时回复、跟进至解决",
        "Follow-up until solved",
        15,
        f"{STAFF}/III",
    ),
    (
        "information_security",
        "信息安全：客户信息保密、数据安全",
        "Information security",
        15,
        f"{INSPECTIONS}/6",
    ),
    (
        "technical_support",
        "技术支持：系统运行、故障处理",
        "Technical support",
        10,
        f"{INSPECTIONS}/6",
    ),
)


@hookimpl
def insurdesk_plugin_info() -> PluginInfo:
    """Describe the plugin."""
    return INFO


@hookimpl
def insurdesk_plugin_config_schema() -> dict[str, Any]:
    """The settings schema."""
    return SCHEMA


@hookimpl
def insurdesk_deadline_rules(
    case: CaseFacts, trigger: str, settings: Mapping[str, Any]
) -> list[DeadlineRule]:
    """Missing-materials notice for complaints; optionally the 10-working-day life answer."""
    if trigger != "received" or not case.is_complaint:
        return []
    rules = [
        DeadlineRule(
            clock="complaint.missing_materials_notice",
            amount=settings["missing_materials_notice_working_days"],
            unit="working_days",
            citation=f"{RULES}/12",
            source=NAME,
            statutory=False,
            description="投诉材料不完整的，自收到材料之日起5个工作日内通知投诉人补充提供",
        )
    ]
    policy = case.policy
    if (
        settings["life_complaint_answer_10_working_days"]
        and policy is not None
        and policy.personal
        and not policy.group
    ):
        rules.append(
            DeadlineRule(
                clock="complaint.decision",
                amount=10,
                unit="working_days",
                citation="2010-life-service/29",
                source=NAME,
                statutory=False,
                description="自受理投诉之日起10个工作日内向投诉人做出明确答复",
            )
        )
    return rules


@hookimpl
def insurdesk_case_created(case: CaseFacts, settings: Mapping[str, Any]) -> list[FollowUp]:
    """An ad-hoc inspection after a complaint; a written report for regulator transfers."""
    follow_ups = []
    if case.is_complaint and settings["adhoc_inspection_after_complaint"]:
        follow_ups.append(
            FollowUp(
                kind="adhoc_inspection",
                note="接到消费者投诉后进行临时检查，跟踪问题整改情况",
                citation=f"{INSPECTIONS}/10",
            )
        )
    if case.channel == "regulator" or "regulator_transferred" in case.complexity:
        follow_ups.append(
            FollowUp(
                kind="regulator_report",
                note="受理监管单位转办的投诉案件时，按照转办单位的要求予以书面报告",
                citation=f"{RULES}/13",
            )
        )
    return follow_ups


@hookimpl
def insurdesk_case_transitioned(
    case: CaseFacts, to_state: str, settings: Mapping[str, Any]
) -> list[FollowUp]:
    """A callback visit after a closed complaint."""
    if to_state != "closed" or not case.is_complaint:
        return []
    if not settings["callback_after_closed_complaint"]:
        return []
    return [
        FollowUp(
            kind="callback_visit",
            due=DeadlineRule(
                clock="callback.after_complaint",
                amount=settings["callback_within_working_days"],
                unit="working_days",
                citation=f"{RULES}/5",
                source=NAME,
                statutory=False,
                description="投诉办结后回访",
            ),
            note="投诉办结回访：确认处理结果与满意度",
            citation=f"{RULES}/5",
        )
    ]


@hookimpl
def insurdesk_visit_quotas(
    unit: UnitFacts, period: Period, settings: Mapping[str, Any]
) -> list[VisitQuota]:
    """Every closed complaint is visited (when the callback rule is on)."""
    if not settings["callback_after_closed_complaint"]:
        return []
    return [
        VisitQuota(
            kind="after_complaint",
            population="closed_complaints",
            share=1.0,
            sampling="all",
            citation=f"{RULES}/5",
        )
    ]


@hookimpl
def insurdesk_inspection_rubric(unit: UnitFacts, settings: Mapping[str, Any]) -> list[RubricItem]:
    """The rubric of the seed rules."""
    return [
        RubricItem(key=k, title_zh=zh, title_en=en, max_score=score, citation=cite)
        for k, zh, en, score, cite in RUBRIC
    ]


@hookimpl
def insurdesk_inspection_schedule(
    unit: UnitFacts, settings: Mapping[str, Any]
) -> InspectionSchedule:
    """Periodic inspections every ``inspection_interval_months`` (at most 6)."""
    return InspectionSchedule(
        interval_months=settings["inspection_interval_months"], citation=f"{INSPECTIONS}/9"
    )
