"""agency_policy — an insurance agency's (保险代理机构) service flow, after 大童保险服务管理制度.

大童保险服务管理制度 第五条 sets the flow: receive, recommend, sign, policy service, claims
service (协助客户办理理赔手续，跟踪理赔进度), and callback visits
(定期对客户进行回访，了解客户满意度);
第三条 puts the customer first. As settings:

* a callback after every sale (``callback_after_sale``) and after every claim
  (``callback_after_claim``): visit quotas of 100 %, and a callback when a claim case closes;
* a satisfaction survey after every closed case (``satisfaction_survey_after_close``);
* a faster complaint answer than the law's 15 days (``complaint_decision_days``, 10 by default);
* first contact on a claim report within ``claim_contact_hours`` (协助理赔).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.hookspecs import (
    CaseFacts,
    DeadlineRule,
    FollowUp,
    Period,
    PluginInfo,
    UnitFacts,
    VisitQuota,
    hookimpl,
)

NAME = "agency_policy"
SOURCE = "seed:大童保险服务管理制度"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "callback_after_sale": {"type": "boolean", "default": True},
        "callback_after_claim": {"type": "boolean", "default": True},
        "callback_within_days": {"type": "integer", "minimum": 1, "maximum": 30, "default": 7},
        "satisfaction_survey_after_close": {"type": "boolean", "default": True},
        "survey_within_days": {"type": "integer", "minimum": 1, "maximum": 30, "default": 7},
        "complaint_decision_days": {
            "type": "integer",
            "minimum": 1,
            "maximum": 15,
            "default": 10,
            "description": "投诉处理决定期限（自然日），快于法定15日",
        },
        "claim_contact_hours": {"type": "integer", "minimum": 1, "maximum": 72, "default": 24},
    },
}

INFO = PluginInfo(
    version="1.0.0",
    title_zh="代理机构服务流程（大童式）",
    title_en="Agency service flow (Dadong-style)",
    description_zh="每笔销售和每次理赔后回访、每个办结案件后满意度调查、快于法定时限答复投诉、"
    "报案后及时联系协助理赔。",
    description_en="A callback after every sale and every claim, a satisfaction survey after "
    "every closed case, complaints answered faster than the law requires, prompt first contact "
    "on claim reports.",
    kind="policy",
    citations=(f"{SOURCE}/5", f"{SOURCE}/3"),
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
    """A faster complaint decision; a first contact on claim reports within hours."""
    if trigger != "received":
        return []
    if case.is_complaint:
        return [
            DeadlineRule(
                clock="complaint.decision",
                amount=settings["complaint_decision_days"],
                unit="natural_days",
                citation=f"{SOURCE}/3",
                source=NAME,
                statutory=False,
                description="客户至上：快于法定时限答复投诉",
            )
        ]
    if case.case_type == "claim_report":
        return [
            DeadlineRule(
                clock="claim.first_contact",
                amount=settings["claim_contact_hours"],
                unit="hours",
                citation=f"{SOURCE}/5",
                source=NAME,
                statutory=False,
                description="协助客户办理理赔手续，跟踪理赔进度",
            )
        ]
    return []


@hookimpl
def insurdesk_case_transitioned(
    case: CaseFacts, to_state: str, settings: Mapping[str, Any]
) -> list[FollowUp]:
    """A satisfaction survey after every closed case; a callback after a closed claim."""
    if to_state != "closed":
        return []
    follow_ups = []
    if settings["satisfaction_survey_after_close"]:
        follow_ups.append(
            FollowUp(
                kind="satisfaction_survey",
                due=DeadlineRule(
                    clock="survey.after_close",
                    amount=settings["survey_within_days"],
                    unit="natural_days",
                    citation=f"{SOURCE}/5",
                    source=NAME,
                    statutory=False,
                ),
                note="了解客户满意度，收集客户意见",
                citation=f"{SOURCE}/5",
            )
        )
    if case.case_type == "claim_report" and settings["callback_after_claim"]:
        follow_ups.append(
            FollowUp(
                kind="callback_visit",
                due=DeadlineRule(
                    clock="callback.after_claim",
                    amount=settings["callback_within_days"],
                    unit="natural_days",
                    citation=f"{SOURCE}/5",
                    source=NAME,
                    statutory=False,
                ),
                note="理赔结案后回访",
                citation=f"{SOURCE}/5",
            )
        )
    return follow_ups


@hookimpl
def insurdesk_visit_quotas(
    unit: UnitFacts, period: Period, settings: Mapping[str, Any]
) -> list[VisitQuota]:
    """Every sale and every paid claim is visited."""
    quotas = []
    if settings["callback_after_sale"]:
        quotas.append(
            VisitQuota(
                kind="after_sale",
                population="new_policies",
                share=1.0,
                sampling="all",
                citation=f"{SOURCE}/5",
            )
        )
    if settings["callback_after_claim"]:
        quotas.append(
            VisitQuota(
                kind="after_claim",
                population="paid_claims",
                share=1.0,
                sampling="all",
                citation=f"{SOURCE}/5",
            )
        )
    if settings["satisfaction_survey_after_close"]:
        quotas.append(
            VisitQuota(
                kind="satisfaction_survey",
                population="closed_cases",
                share=1.0,
                sampling="all",
                citation=f"{SOURCE}/5",
            )
        )
    return quotas
