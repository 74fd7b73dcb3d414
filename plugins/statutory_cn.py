"""statutory_cn — the statutory baseline: the law's deadlines, each citing its article.

Always on, for every tenant and unit; it cannot be disabled and has no settings. It is the only
plugin whose rules are ``statutory``: the outer bound that policies may tighten, never loosen.

Versioned by effective date: :data:`RULESETS` lists rule sets with the date they take effect,
and a case gets the rule set in force on the day it was received (China time), so when the
regulator amends the rules a new set is added and older cases keep theirs. The 2020 complaint
rules are the earliest set carried; a case received before 2020-03-01 gets it too.

Sources (verbatim in ``shared/regulations``):

* 银行业保险业消费投诉处理管理办法 (2020): 第十八条 decide within 15 days of receipt (extensions to
  30 and 60 days are granted by the deadline engine's extension policy), 第二十条 review: 30 days to
  ask, 30 days to decide (appraisal and mediation, 第十八条 and 第二十三条, pause the clock and new
  facts restart it: the deadline engine applies both);
* 保险法 第二十三条 (claims: decide within 30 days when complex; pay within 10 days of agreement),
  第二十四条 (refusal notice within 3 days), 第二十五条 (advance payment within 60 days);
* 人身保险业务基本服务规定 (2010), for individual 人身保险 (not group business, 第三十二条):
  第十五条 new-policy callback within the cooling-off period for policies over one year;
  第十九条 保全 accepted within 2 working days, missing materials within 5 working days;
  第二十条 finished within 5 working days of approval or payment; 第二十一条 lapse notice within
  10 working days; 第二十三条 life claim decided within 5 working days (30 days when complex).

Which clocks stop while the customer's materials are awaited (``insurdesk_clock_pauses``):

* ``claim.decision`` in ``awaiting_materials``: 最高人民法院关于适用《中华人民共和国保险法》
  若干问题的解释（二）第十五条: "保险法第二十三条规定的三十日核定期间，应自保险人初次收到索赔
  请求及投保人、被保险人或者受益人提供的有关证明和资料之日起算。保险人主张扣除投保人、被保险人
  或者受益人补充提供有关证明和资料期间的，人民法院应予支持；扣除期间自保险人根据保险法第二十二条
  规定作出的通知到达投保人、被保险人或者受益人之日起，至投保人、被保险人或者受益人按照通知要求
  补充提供的有关证明和资料到达保险人之日止。" The same deduction applies to the 5-working-day
  life period of 2010-life-service/23, which counts from the same claim;
* ``policy_service.acceptance`` in ``awaiting_materials``: 2010-life-service/19 counts the 2 working
  days "自收到资料齐全……的保全申请之日起", so they do not run while the application is incomplete;
* ``complaint.decision`` does **not** pause: 2020-complaints/18 counts 15 days
  "自收到消费投诉之日起" and excludes only appraisal (第十八条第二款) and mediation
  (第二十三条), which are the handler's explicit pauses. A company may not stop the statutory
  period while it waits for materials.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from core.hookspecs import CaseFacts, ClockPause, DeadlineRule, PluginInfo, hookimpl

NAME = "statutory_cn"
VERSION = "2020.3.1"
CHINA = ZoneInfo("Asia/Shanghai")


def _rule(clock: str, amount: int, unit: str, citation: str, description: str) -> DeadlineRule:
    return DeadlineRule(
        clock=clock,
        amount=amount,
        unit=unit,  # type: ignore[arg-type]
        citation=citation,
        source=NAME,
        statutory=True,
        description=description,
    )


def _individual_personal(case: CaseFacts) -> bool:
    """人身保险, not group business: the 2010 life-insurance service rules apply."""
    return case.policy is not None and case.policy.personal and not case.policy.group


def rules_2020(case: CaseFacts, trigger: str) -> list[DeadlineRule]:
    """The rules in force since 2020-03-01 (银行业保险业消费投诉处理管理办法 took effect)."""
    rules: list[DeadlineRule] = []
    life = _individual_personal(case)
    if trigger == "received":
        if case.is_complaint:
            rules.append(
                _rule(
                    "complaint.decision",
                    15,
                    "natural_days",
                    "2020-complaints/18",
                    "自收到消费投诉之日起15日内作出处理决定并告知投诉人",
                )
            )
        if case.case_type == "claim_report":
            if life and "complex" not in case.complexity:
                rules.append(
                    _rule(
                        "claim.decision",
                        5,
                        "working_days",
                        "2010-life-service/23",
                        "收到赔偿或者给付保险金的请求后，应当在5个工作日内作出核定",
                    )
                )
            else:
                rules.append(
                    _rule(
                        "claim.decision",
                        30,
                        "natural_days",
                        "2010-life-service/23" if life else "insurance-law/23",
                        "情形复杂的，应当在三十日内作出核定",
                    )
                )
            rules.append(
                _rule(
                    "claim.advance_payment",
                    60,
                    "natural_days",
                    "insurance-law/25",
                    "六十日内，对其赔偿或者给付保险金的数额不能确定的，应当根据已有证明和资料可以确定的"
                    "数额先予支付",
                )
            )
        if case.case_type == "service_request" and case.service_kind == "policy_change" and life:
            rules.append(
                _rule(
                    "policy_service.acceptance",
                    2,
                    "working_days",
                    "2010-life-service/19",
                    "自收到资料齐全、符合合同约定条件的保全申请之日起2个工作日内完成受理",
                )
            )
            rules.append(
                _rule(
                    "policy_service.missing_materials",
                    5,
                    "working_days",
                    "2010-life-service/19",
                    "保全申请资料不完整的，应当自收到保全申请之日起5个工作日内一次性通知保全申请人",
                )
            )
    elif trigger == "complaint.decided" and case.is_complaint:
        rules.append(
            _rule(
                "complaint.review_request_window",
                30,
                "natural_days",
                "2020-complaints/20",
                "可以自收到处理决定之日起30日内向其上级机构书面申请核查",
            )
        )
    elif trigger == "review.requested" and case.is_complaint:
        rules.append(
            _rule(
                "complaint.review",
                30,
                "natural_days",
                "2020-complaints/20",
                "自收到核查申请之日起30日内作出核查决定并告知投诉人",
            )
        )
    elif trigger == "claim.agreed" and case.case_type == "claim_report":
        rules.append(
            _rule(
                "claim.payment",
                10,
                "natural_days",
                "insurance-law/23",
                "达成赔偿或者给付保险金的协议后十日内，履行赔偿或者给付保险金义务",
            )
        )
    elif trigger == "claim.refused" and case.case_type == "claim_report":
        rules.append(
            _rule(
                "claim.refusal_notice",
                3,
                "natural_days",
                "insurance-law/24",
                "自作出核定之日起三日内向被保险人或者受益人发出拒绝赔偿或者拒绝给付保险金通知书",
            )
        )
    elif trigger in ("policy_service.approved", "policy_service.premium_paid") and life:
        rules.append(
            _rule(
                "policy_service.completion",
                5,
                "working_days",
                "2010-life-service/20",
                "自同意保全（或投保人缴纳足额保险费）之日起5个工作日内处理完毕",
            )
        )
    elif trigger == "policy.suspended" and life:
        rules.append(
            _rule(
                "policy.lapse_notice",
                10,
                "working_days",
                "2010-life-service/21",
                "保险合同效力中止的，应当自中止之日起10个工作日内向投保人发出效力中止通知",
            )
        )
    elif trigger == "policy.issued" and life:
        rules.extend(_new_policy_callback(case))
    return rules


def _new_policy_callback(case: CaseFacts) -> list[DeadlineRule]:
    policy = case.policy
    if policy is None or policy.cooling_off_end is None:
        return []
    if policy.term_months is None or policy.term_months <= 12:
        return []
    days = (policy.cooling_off_end - case.received_at.astimezone(CHINA).date()).days
    if days < 1:
        return []
    return [
        _rule(
            "callback.new_policy",
            days,
            "natural_days",
            "2010-life-service/15",
            "在犹豫期内对合同期限超过一年的人身保险新单业务进行回访",
        )
    ]


CLAIM_MATERIALS_CITATION = "spc-insurance-2/15"
"""保险法司法解释（二）第十五条: the time the claimant takes to add proof is not counted."""


def pauses_2020(case: CaseFacts) -> list[ClockPause]:
    """The clocks that stop while a case of these rules is in some states (module docstring)."""
    if case.case_type == "claim_report":
        return [
            ClockPause(
                clock="claim.decision",
                states=("awaiting_materials",),
                citation=CLAIM_MATERIALS_CITATION,
                description="扣除被保险人或者受益人补充提供有关证明和资料的期间",
            )
        ]
    if case.case_type == "service_request":
        return [
            ClockPause(
                clock="policy_service.acceptance",
                states=("awaiting_materials",),
                citation="2010-life-service/19",
                description="自收到资料齐全、符合合同约定条件的保全申请之日起2个工作日内完成受理",
            )
        ]
    return []


@dataclass(frozen=True)
class RuleSet:
    """The statutory rules in force from ``effective_from`` (a China date)."""

    effective_from: dt.date
    label: str
    rules: Callable[[CaseFacts, str], list[DeadlineRule]]
    pauses: Callable[[CaseFacts], list[ClockPause]] = lambda case: []


RULESETS: tuple[RuleSet, ...] = (
    RuleSet(
        dt.date(2020, 3, 1),
        "银行业保险业消费投诉处理管理办法 (2020) + 保险法 + 2010 人身保险服务规定",
        rules_2020,
        pauses_2020,
    ),
)


class StatutoryBaseline:
    """The statutory baseline over a list of effective-dated rule sets."""

    def __init__(self, rulesets: Sequence[RuleSet] = RULESETS) -> None:
        if not rulesets:
            raise ValueError("at least one rule set is needed")
        self.rulesets = tuple(sorted(rulesets, key=lambda r: r.effective_from))

    def ruleset_for(self, received_at: dt.datetime) -> RuleSet:
        """The rule set in force on the (China) day ``received_at`` falls on."""
        day = received_at.astimezone(CHINA).date()
        chosen = self.rulesets[0]
        for ruleset in self.rulesets:
            if ruleset.effective_from <= day:
                chosen = ruleset
        return chosen

    @hookimpl
    def insurdesk_plugin_info(self) -> PluginInfo:
        return INFO

    @hookimpl
    def insurdesk_deadline_rules(self, case: CaseFacts, trigger: str) -> list[DeadlineRule]:
        return self.ruleset_for(case.received_at).rules(case, trigger)

    @hookimpl
    def insurdesk_clock_pauses(self, case: CaseFacts) -> list[ClockPause]:
        return self.ruleset_for(case.received_at).pauses(case)


INFO = PluginInfo(
    version=VERSION,
    title_zh="法定时限基线",
    title_en="Statutory baseline",
    description_zh="法律法规规定的时限（投诉处理、核查、理赔、保全、新单回访），每条注明出处；"
    "始终启用，不可停用，是各项政策不得放宽的上限。",
    description_en="The time limits set by law and regulation (complaints, reviews, claims, "
    "policy service, new-policy callbacks), each citing its article; always on, and the outer "
    "bound no policy may loosen.",
    kind="statutory",
    citations=(
        "2020-complaints/18",
        "2020-complaints/20",
        "insurance-law/23",
        "insurance-law/24",
        "insurance-law/25",
        "2010-life-service/15",
        "2010-life-service/19",
        "2010-life-service/20",
        "2010-life-service/21",
        "2010-life-service/23",
        CLAIM_MATERIALS_CITATION,
    ),
)

_BASELINE = StatutoryBaseline()


@hookimpl
def insurdesk_plugin_info() -> PluginInfo:
    """Describe the statutory baseline."""
    return INFO


@hookimpl
def insurdesk_deadline_rules(case: CaseFacts, trigger: str) -> list[DeadlineRule]:
    """The statutory rules for ``trigger``, from the rule set in force when it was received."""
    return _BASELINE.insurdesk_deadline_rules(case, trigger)


@hookimpl
def insurdesk_clock_pauses(case: CaseFacts) -> list[ClockPause]:
    """The clocks that stop while the case awaits materials, per the rule set in force."""
    return _BASELINE.insurdesk_clock_pauses(case)
