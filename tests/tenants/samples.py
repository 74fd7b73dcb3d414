"""Small manifests for tests (the demo manifests are used where their size matters)."""

from __future__ import annotations

SMALL = """\
version: 1
tenant: {slug: SLUG, name: 测试保险, case_number_prefix: CS}
units:
  - code: G
    name: 测试集团
    kind: group
    children:
      - code: CO
        name: 测试人寿
        kind: company
        children:
          - {code: BJ, name: 北京, kind: branch}
          - {code: SH, name: 上海分公司, kind: branch}
roles:
  - key: visitor
    name_zh: 回访专员
    name_en: Callback specialist
    permissions: [cases:read, visits:write]
people:
  - username: admin
    display_name: 管理员
    roles: [{role: tenant_admin, unit: G}]
  - username: agent.bj
    display_name: 北京客服
    roles: [{role: agent, unit: BJ}]
customers:
  - key: c1
    kind: policyholder
    name: 王小明
    phone: "13800000001"
    id_type: resident_id
    id_number: "110101199001019011"
    unit: BJ
policies:
  - number: P-1
    product: {code: L01, name: 终身寿险}
    line_of_business: life
    start_date: "2026-01-05"
    unit: BJ
    agent: agent.bj
    policyholder: c1
cases:
  - number: CS-DEMO-1
    type: complaint
    channel: hotline
    subject: 理赔慢
    unit: BJ
    customer: c1
    policy: P-1
    assignee: agent.bj
    received_at: "2026-03-02T09:30:00"
"""


def small(slug: str) -> str:
    """The small manifest with ``slug``."""
    return SMALL.replace("SLUG", slug)
