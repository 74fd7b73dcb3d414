"""Loading and validating manifests (no database): the demo manifests, and every kind of error
naming the file, the line and the path inside the manifest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from core.people.permissions import BUILTIN_ROLES
from tenants.demo import DEMO_DIR
from tenants.manifests import load_manifest, load_manifests, parse_manifest
from tenants.schema import ManifestError, format_path
from tests.tenants.samples import small

WriteManifest = Callable[[str, str], Path]


def test_demo_manifests_are_valid_and_cover_every_builtin_role() -> None:
    manifests = {m.slug: m for m in load_manifests([DEMO_DIR])}
    assert set(manifests) == {"huaxia", "anxin"}
    huaxia = manifests["huaxia"]
    assert huaxia.demo
    held = {g.role for p in huaxia.people for g in p.roles}
    assert {r.key for r in BUILTIN_ROLES} <= held
    assert len(huaxia.customers) >= 20 and len(huaxia.policies) >= 20 and len(huaxia.cases) >= 10
    kinds = {u.kind.value for u in huaxia.units}
    assert {
        "group",
        "company",
        "branch",
        "sub_branch",
        "agency",
        "service_centre",
        "department",
    } <= kinds
    assert {p.line_of_business.value for p in huaxia.policies} >= {
        "life",
        "health",
        "motor",
        "property",
    }


def test_demo_id_numbers_fail_the_checksum() -> None:
    """The demo's resident id numbers can never be a real person's (wrong check digit)."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    for m in load_manifests([DEMO_DIR]):
        for c in m.customers:
            if c.id_type == "resident_id":
                assert c.id_number is not None
                body, check = c.id_number[:17], c.id_number[17]
                right = "10X98765432"[
                    sum(int(a) * w for a, w in zip(body, weights, strict=True)) % 11
                ]
                assert check != right, c.key


def _error(text: str, name: str = "bad.yaml") -> str:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, name)
    return str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "          - {code: SH, name: 上海分公司, kind: branch}",
            "          - {code: SH, name: 上海分公司, kind: branch}\n"
            "  - {code: GZ, name: 广州, kind: branch, parent: NOPE}",
            "bad.yaml:14: units[1].parent: unknown parent unit 'NOPE'",
        ),
        (
            "          - {code: SH, name: 上海分公司, kind: branch}",
            "          - {code: BJ, name: 上海分公司, kind: branch}",
            "bad.yaml:13: units[0].children[0].children[1].code: duplicate unit code 'BJ'",
        ),
        (
            "    roles: [{role: agent, unit: BJ}]",
            "    roles: [{role: agent, unit: BJ}, {role: nobody, unit: BJ}]",
            "bad.yaml:25: people[1].roles[1].role: unknown role 'nobody'",
        ),
        (
            "    roles: [{role: agent, unit: BJ}]",
            "    roles: [{role: agent, unit: XX}]",
            "bad.yaml:25: people[1].roles[0].unit: unknown unit 'XX'",
        ),
        (
            "permissions: [cases:read, visits:write]",
            "permissions: [cases:read, visits:fly]",
            "bad.yaml:18: roles[0].permissions[1]: unknown permission 'visits:fly'",
        ),
        (
            "  - key: visitor",
            "  - key: agent",
            "bad.yaml:15: roles[0].key: 'agent' is a built-in role",
        ),
        (
            "    display_name: 管理员",
            "    display_name: 管理员\n    password: demo-tenant_admin-2026",
            "bad.yaml:22: people[0].password: passwords are allowed only in demo manifests",
        ),
        (
            "    policyholder: c1",
            "    policyholder: c9",
            "bad.yaml:41: policies[0].policyholder: unknown customer 'c9'",
        ),
        (
            "    assignee: agent.bj",
            "    assignee: nobody",
            "bad.yaml:50: cases[0].assignee: unknown person 'nobody'",
        ),
        (
            "    kind: company",
            "    kind: companyy",
            "bad.yaml:10: units[0].children[0].kind: 'companyy' is not one of",
        ),
        (
            "    name: 测试人寿",
            "    name: 测试人寿\n        colour: red",
            "bad.yaml:8: units[0].children[0]: unknown field(s) ('colour' was unexpected)",
        ),
        (
            '    start_date: "2026-01-05"',
            '    start_date: "2026-02-30"',
            "bad.yaml:38: policies[0].start_date: '2026-02-30' is not a date",
        ),
        (
            "tenant: {slug: t-err,",
            "tenant: {slug: Bad_Slug,",
            "bad.yaml:2: tenant.slug: 'Bad_Slug' does not have the expected form",
        ),
    ],
    ids=[
        "unknown-parent",
        "duplicate-unit-code",
        "unknown-role",
        "unknown-unit",
        "unknown-permission",
        "builtin-role-redefined",
        "password-not-demo",
        "unknown-customer",
        "unknown-assignee",
        "bad-enum",
        "unknown-field",
        "bad-date",
        "bad-slug",
    ],
)
def test_errors_name_file_line_and_path(old: str, new: str, expected: str) -> None:
    text = small("t-err")
    assert old in text
    assert expected in _error(text.replace(old, new, 1))


def test_cycle_is_refused() -> None:
    text = small("t-cyc").replace(
        "units:\n",
        "units:\n  - {code: A, name: a, kind: department, parent: B}\n"
        "  - {code: B, name: b, kind: department, parent: A}\n",
        1,
    )
    assert "bad.yaml:4: units[0].parent: the units form a cycle: A → B → A" in _error(text)


def test_bad_yaml_names_the_line() -> None:
    text = small("t-yaml").replace("    name: 测试人寿", "    name: [测试人寿", 1)
    message = _error(text, "broken.yaml")
    assert message.startswith("broken.yaml:")
    assert "bad YAML" in message


def test_duplicate_yaml_key_is_refused() -> None:
    text = small("t-dup").replace("    name: 测试人寿", "    name: 测试人寿\n        name: x", 1)
    assert "bad.yaml:10: bad YAML: duplicate key 'name'" in _error(text)


def test_every_issue_is_listed() -> None:
    text = (
        small("t-many")
        .replace("policyholder: c1", "policyholder: c9")
        .replace("assignee: agent.bj", "assignee: nobody")
    )
    message = _error(text)
    assert "policies[0].policyholder" in message and "cases[0].assignee" in message


def test_case_state_must_belong_to_the_case_type() -> None:
    pytest.importorskip("core.cases.lifecycle")
    text = small("t-state").replace("    subject: 理赔慢", "    state: paid\n    subject: 理赔慢")
    assert "cases[0].state: 'paid' is not a state of a complaint case" in _error(text)


def test_duplicate_slug_across_files(write_manifest: WriteManifest) -> None:
    a = write_manifest("a.yaml", small("t-same"))
    b = write_manifest("b.yaml", small("t-same"))
    with pytest.raises(ManifestError) as info:
        load_manifests([a, b])
    assert f"{b}:2: tenant.slug: duplicate slug 't-same' (also in {a})" in str(info.value)


def test_missing_file_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nope\.yaml: cannot read"):
        load_manifest(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match="no manifest files"):
        load_manifests([tmp_path])


def test_cooling_off_defaults() -> None:
    extra = """\
  - {number: P-2, product: {code: H1, name: 百万医疗}, line_of_business: health, term_months: 12,
     start_date: "2026-01-05", unit: BJ, policyholder: c1}
  - {number: P-3, product: {code: H2, name: 重疾}, line_of_business: health, term_months: 240,
     start_date: "2026-01-05", unit: BJ, policyholder: c1}
  - {number: P-4, product: {code: M1, name: 车险}, line_of_business: motor, term_months: 12,
     start_date: "2026-01-05", unit: BJ, policyholder: c1}
  - {number: P-5, product: {code: L1, name: 寿险}, line_of_business: life, term_months: 240,
     start_date: "2026-01-05", cooling_off_end: "2026-01-25", unit: BJ, policyholder: c1}
  - {number: P-6, product: {code: L1, name: 寿险}, line_of_business: life, term_months: 240,
     start_date: "2026-01-05", cooling_off_end: null, unit: BJ, policyholder: c1}
"""
    text = small("t-cool").replace("policies:\n", "policies:\n" + extra, 1)
    ends = {p.number: p.cooling_off_end for p in parse_manifest(text, "cool.yaml").policies}
    assert ends == {
        "P-1": date(2026, 1, 20),  # whole of life (no term): start + 15 days
        "P-2": None,  # one-year health: none
        "P-3": date(2026, 1, 20),
        "P-4": None,  # motor: none
        "P-5": date(2026, 1, 25),  # given
        "P-6": None,  # explicitly none
    }


def test_received_at_without_offset_is_in_the_tenant_time_zone() -> None:
    m = parse_manifest(small("t-tz"), "tz.yaml")
    assert m.cases[0].received_at == datetime(2026, 3, 2, 1, 30, tzinfo=UTC)


def test_digest_ignores_comments_and_secret_values() -> None:
    base = parse_manifest(small("t-dig"), "a.yaml").digest
    assert parse_manifest("# comment\n" + small("t-dig"), "b.yaml").digest == base
    assert parse_manifest(small("t-dig").replace("北京,", "北京分公司,"), "c.yaml").digest != base


def test_format_path() -> None:
    assert format_path(("units", 1, "children", 0, "parent")) == "units[1].children[0].parent"
    assert format_path(()) == ""
