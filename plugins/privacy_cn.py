"""privacy_cn — a tenant's customer-information policy: data-subject request deadlines and
retention periods per data class.

Off by default: without it the core applies the same defaults (``core.privacy.policy``). A
tenant admin enables it at a unit to set its own periods there and below. It has no hooks but
its settings; the core reads them where the policy applies.

Sources: 个人信息保护法 第四十五、五十条 (requests answered promptly; no fixed statutory period,
15 working days is the platform default); 保险法 第八十七条 (business records kept at least 5
years after a contract of up to one year ends, 10 years after a longer one: the retention of a
former customer's data never goes below that); 保险行业客户信息管理制度 (5) (destroy what is no
longer needed).
"""

from __future__ import annotations

from typing import Any

from core.hookspecs import PluginInfo, hookimpl

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "dsr_working_days": {
            "type": "integer",
            "minimum": 1,
            "maximum": 30,
            "default": 15,
            "description": "个人信息权利请求（查阅、复制、更正、删除）处理期限（工作日）"
            "/ working days to answer a data-subject request",
        },
        "prospect_retention_days": {
            "type": "integer",
            "minimum": 30,
            "maximum": 3650,
            "default": 730,
            "description": "未成交潜在客户信息保存期限（天，自最后一次联系）"
            "/ days a prospect's data is kept after the last contact",
        },
        "former_customer_retention_years": {
            "type": "integer",
            "minimum": 10,
            "maximum": 30,
            "default": 10,
            "description": "保单终止后客户信息保存期限（年），不少于保险法第八十七条的期限"
            "/ years a former customer's data is kept after their last policy ended "
            "(at least 保险法 87)",
        },
        "dsr_note_retention_days": {
            "type": "integer",
            "minimum": 90,
            "maximum": 3650,
            "default": 1095,
            "description": "已办结权利请求的备注保存期限（天）"
            "/ days a closed request's note is kept",
        },
        "case_text_retention_years": {
            "type": "integer",
            "minimum": 5,
            "maximum": 30,
            "default": 10,
            "description": "已结案案件中个人信息（描述、答复、理由、通知、举报人身份）保存期限"
            "（年，自结案；保单尚在保存期内的不早于保单期限）"
            "/ years the personal free text of a closed case is kept (after closing; not "
            "before its policy's own period)",
        },
        "attachment_retention_years": {
            "type": "integer",
            "minimum": 5,
            "maximum": 30,
            "description": "已结案案件附件（病历、信函等材料）保存期限"
            "（年，自结案；未设置时与案件个人信息相同；保单尚在保存期内的不早于保单期限）"
            "/ years a closed case's attachment files are kept (after closing; unset: as long as "
            "the case's free text; not before its policy's own period)",
        },
        "delivery_log_retention_days": {
            "type": "integer",
            "minimum": 30,
            "maximum": 3650,
            "default": 365,
            "description": "通知发送记录中收件人信息保存期限（天）"
            "/ days the delivery log keeps whom a message went to",
        },
    },
}

INFO = PluginInfo(
    version="1.0.0",
    title_zh="客户信息保护策略",
    title_en="Customer-information policy",
    description_zh="个人信息权利请求的处理期限（默认15个工作日）与各类客户信息的保存期限；到期数据由"
    "平台分批匿名化并留存销毁记录，法律保全中的数据除外。",
    description_en="Deadlines of data-subject requests (15 working days by default) and the "
    "retention period of each class of customer data; the platform anonymizes what is due in "
    "batches with a destruction record, never data under legal hold.",
    kind="policy",
    citations=(
        "个人信息保护法/45",
        "个人信息保护法/50",
        "保险法/87",
        "seed:保险行业客户信息管理制度/5",
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
