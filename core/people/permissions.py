"""The permission catalogue and the built-in roles taken from the source rules.

A permission is ``<resource>:<action>``. OAuth scopes use the same names, so a client's
scopes and a person's roles are checked by the same code (:mod:`core.auth.guards`).
"""

from __future__ import annotations

from dataclasses import dataclass

PERMISSIONS: dict[str, str] = {
    "org:read": "Read the organization tree",
    "org:write": "Create, move and deactivate organization units",
    "people:read": "Read people",
    "people:write": "Create and change people",
    "roles:read": "Read roles and role assignments",
    "roles:write": "Define roles and assign them",
    "customers:read": "Read customers (personal fields masked)",
    "customers:read_clear": "Read customers' personal fields in clear for a declared purpose "
    "(X-Purpose; every such read is audited)",
    "customers:write": "Create and change customers",
    "policies:read": "Read policies",
    "policies:write": "Create and change policies",
    "cases:read": "Read cases and their timelines",
    "cases:write": "Register cases and work them",
    "cases:assign": "Assign and transfer cases",
    "cases:approve": "Approve extensions and close cases (senior manager)",
    "cases:whistleblower": "See the identity of a whistle-blowing reporter",
    "inspections:write": "Carry out quality inspections",
    "visits:write": "Carry out callback visits",
    "plugins:read": "Read plugins and their settings",
    "plugins:admin": "Enable, configure and roll back plugins",
    "clients:admin": "Register and manage API clients",
    "webhooks:admin": "Subscribe URLs to events; list and replay webhook deliveries",
    "audit:read": "Read the audit log",
    "privacy:admin": "Customer-information protection: consents, data-subject requests, sharing "
    "agreements, retention and legal holds, encryption keys, the privacy report",
    "stats:read": "Read statistics and reports",
    "notifications:admin": "Read the delivery log, dead letters and background-work metrics; "
    "retry deliveries; edit notification templates",
}

ALL_PERMISSIONS: frozenset[str] = frozenset(PERMISSIONS)
_READ = frozenset(p for p in PERMISSIONS if p.endswith(":read"))


@dataclass(frozen=True)
class BuiltinRole:
    """A role every tenant gets at provisioning, with its source in the seed rules."""

    key: str
    name_zh: str
    name_en: str
    permissions: frozenset[str]
    source: str


BUILTIN_ROLES: tuple[BuiltinRole, ...] = (
    BuiltinRole(
        "tenant_admin",
        "租户管理员",
        "Tenant administrator",
        ALL_PERMISSIONS - {"cases:whistleblower"},
        "platform",
    ),
    BuiltinRole(
        "general_manager",
        "总经理",
        "General manager",
        _READ | {"cases:write", "cases:assign", "cases:approve", "cases:whistleblower"},
        "客户服务管理规定 第三条",
    ),
    BuiltinRole(
        "service_director",
        "运营管理部负责人",
        "Service director",
        _READ
        | {
            "cases:write",
            "cases:assign",
            "cases:approve",
            "cases:whistleblower",
            "visits:write",
            "inspections:write",
        },
        "客户服务管理规定 第四条",
    ),
    BuiltinRole(
        "cs_division",
        "客服处",
        "Customer-service division",
        _READ
        | {
            "cases:write",
            "cases:assign",
            "visits:write",
            "customers:write",
            "customers:read_clear",
        },
        "客户服务管理规定 第五条",
    ),
    BuiltinRole(
        "agent",
        "客户服务岗",
        "Customer-service agent",
        frozenset(
            {
                "org:read",
                "customers:read",
                "customers:read_clear",
                "customers:write",
                "policies:read",
                "cases:read",
                "cases:write",
                "visits:write",
            }
        ),
        "客户服务管理规定 第七条",
    ),
    BuiltinRole(
        "quality_inspector",
        "客服质检岗",
        "Quality inspector",
        frozenset(
            {
                "org:read",
                "people:read",
                "customers:read",
                "policies:read",
                "cases:read",
                "inspections:write",
                "stats:read",
            }
        ),
        "客户服务管理规定 第七条; 客服中心服务质量检查管理办法",
    ),
    BuiltinRole(
        "branch_manager",
        "分支机构负责人",
        "Branch manager",
        _READ - {"audit:read"} | {"cases:write", "cases:assign", "cases:approve"},
        "客户服务管理规定 第五条(六)",
    ),
    BuiltinRole(
        "auditor",
        "只读审计员",
        "Read-only auditor",
        _READ,
        "保险行业客户信息管理制度",
    ),
)


def unknown_permissions(perms: list[str] | set[str] | frozenset[str]) -> list[str]:
    """The names in ``perms`` that are not in the catalogue, sorted."""
    return sorted(set(perms) - ALL_PERMISSIONS)
