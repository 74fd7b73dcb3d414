"""Tenant manifests: loading the YAML, and the parsed, validated :class:`Manifest`.

A manifest describes one tenant (docs/manifests.md). :func:`load_manifests` reads files and
directories, validates every one of them (shape with the JSON Schema, then the semantic
checks of :mod:`tenants.schema`) and raises one :class:`ManifestError` listing every issue
with its file, line and path. Nothing touches a database here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path as FsPath
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

from core.cases.models import CaseType, Channel
from core.customers.models import ContactChannel, CustomerKind, LineOfBusiness
from core.orgs.models import UnitKind
from tenants.schema import Issue, ManifestError, Path, semantic_errors, shape_errors

__all__ = [
    "COOLING_OFF_DAYS",
    "Manifest",
    "ManifestError",
    "load_manifest",
    "load_manifests",
    "manifest_files",
    "parse_manifest",
]

COOLING_OFF_DAYS = 15
"""Default cooling-off (犹豫期) length for life, health and annuity policies over one year.

健康保险管理办法 (2019) 第十五条: long-term health insurance has a cooling-off period of at
least 15 days; the life insurers' contracts use the same 15 days in practice, and
人身保险业务基本服务规定 第十五条 requires the new-policy callback visit within it for
policies longer than one year. A manifest may give ``cooling_off_end`` (or ``null``).
"""

_COOLING_OFF_LINES = frozenset({LineOfBusiness.LIFE, LineOfBusiness.HEALTH, LineOfBusiness.ANNUITY})


# --- YAML ----------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps dates as strings (the schema checks them) and refuses
    duplicate keys (PyYAML would silently keep the last one)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _read_yaml(text: str, source: str) -> tuple[Any, Node | None]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        context_mark = getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark.line + 1 != line:
            context = f"{context} that starts on line {context_mark.line + 1}"
        reason = f"bad YAML: {problem}" + (f" ({context})" if context else "")
        raise ManifestError([Issue(source, (), reason, line)]) from exc
    finally:
        loader.dispose()
    return data, node


def _line_of(node: Node | None, path: Path) -> int | None:
    """The 1-based line of ``path`` in the YAML (the deepest part of it that exists)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        child: Node | None = None
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    child = value_node
                    break
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


# --- the parsed manifest -------------------------------------------------------------------


@dataclass(frozen=True)
class TenantSpec:
    """The tenant row."""

    slug: str
    name: str
    time_zone: str = "Asia/Shanghai"
    locale: str = "zh-CN"
    case_number_prefix: str | None = None

    @property
    def case_number_format(self) -> str | None:
        """The tenant's case-number format: the tenant prefix before the platform's default
        ``{prefix}-{year}-{seq:06d}`` (``{prefix}`` is the case type's, e.g. ``TS`` for 投诉),
        so ``HX`` numbers complaints ``HX-TS-2026-000001``. None: keep the default."""
        if self.case_number_prefix is None:
            return None
        return f"{self.case_number_prefix}-{{prefix}}-{{year}}-{{seq:06d}}"


@dataclass(frozen=True)
class UnitSpec:
    """An organization unit; ``parent`` is the parent's code (None: a root)."""

    code: str
    name: str
    kind: UnitKind
    name_en: str | None
    parent: str | None
    at: Path


@dataclass(frozen=True)
class RoleSpec:
    """A tenant's own role."""

    key: str
    name_zh: str
    name_en: str
    permissions: tuple[str, ...]
    at: Path


@dataclass(frozen=True)
class GrantSpec:
    """A role held at a unit."""

    role: str
    unit: str


@dataclass(frozen=True)
class PersonSpec:
    """A member of staff and the roles they hold."""

    username: str
    display_name: str
    email: str | None
    phone: str | None
    locale: str
    password: str | None
    roles: tuple[GrantSpec, ...]
    at: Path


@dataclass(frozen=True)
class CustomerSpec:
    """A customer; ``key`` names it inside the manifest (and, hashed, in the database)."""

    key: str
    kind: CustomerKind
    name: str
    phone: str | None
    email: str | None
    id_type: str | None
    id_number: str | None
    address: str | None
    preferred_channel: ContactChannel
    preferred_language: str
    unit: str
    at: Path


@dataclass(frozen=True)
class PolicySpec:
    """A policy; references by unit code, agent username and customer keys."""

    number: str
    product_code: str
    product_name: str
    line_of_business: LineOfBusiness
    term_months: int | None
    start_date: date
    cooling_off_end: date | None
    status: str
    unit: str
    agent: str | None
    policyholder: str
    insured: str | None
    at: Path


@dataclass(frozen=True)
class CaseSpec:
    """A case as it stands (created once; afterwards it changes through its workflow)."""

    number: str
    type: CaseType
    channel: Channel
    state: str
    subject: str
    description: str | None
    unit: str
    customer: str | None
    policy: str | None
    assignee: str | None
    received_at: datetime
    at: Path


@dataclass(frozen=True)
class PluginSpec:
    """A plugin enabled (or disabled) at a unit, with its settings."""

    plugin: str
    unit: str
    enabled: bool
    settings: dict[str, Any]
    at: Path


@dataclass(frozen=True)
class ClientSpec:
    """An API client (OAuth client credentials); a secret only in demo manifests."""

    key: str
    name: str
    scopes: tuple[str, ...]
    units: tuple[str, ...]
    secret: str | None
    at: Path
    public: bool = False
    redirect_uris: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """A validated manifest, ready to apply."""

    source: str
    demo: bool
    tenant: TenantSpec
    digest: str
    units: tuple[UnitSpec, ...] = ()
    roles: tuple[RoleSpec, ...] = ()
    people: tuple[PersonSpec, ...] = ()
    customers: tuple[CustomerSpec, ...] = ()
    policies: tuple[PolicySpec, ...] = ()
    cases: tuple[CaseSpec, ...] = ()
    plugins: tuple[PluginSpec, ...] = ()
    clients: tuple[ClientSpec, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    node: Node | None = field(default=None, repr=False, compare=False)

    @property
    def slug(self) -> str:
        """The tenant's slug."""
        return self.tenant.slug

    def issue(self, path: Path, reason: str) -> Issue:
        """An :class:`Issue` at ``path`` of this manifest, with its line."""
        return Issue(self.source, path, reason, _line_of(self.node, path))


def manifest_digest(data: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON, with passwords and secrets left out."""

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: ("<set>" if k in ("password", "secret") else scrub(v)) for k, v in value.items()
            }
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    canonical = json.dumps(scrub(data), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _Builder:
    """Turns schema-valid data into a :class:`Manifest`, collecting value errors."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.errors: list[tuple[Path, str]] = []

    def build(self, source: str) -> Manifest:
        d = self.data
        t = d["tenant"]
        tenant = TenantSpec(
            slug=t["slug"],
            name=t["name"],
            time_zone=t.get("time_zone", "Asia/Shanghai"),
            locale=t.get("locale", "zh-CN"),
            case_number_prefix=t.get("case_number_prefix"),
        )
        try:
            zone = ZoneInfo(tenant.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            self.errors.append((("tenant", "time_zone"), f"unknown time zone {tenant.time_zone!r}"))
            zone = ZoneInfo("UTC")
        units: list[UnitSpec] = []
        for i, u in enumerate(d.get("units", [])):
            self._unit(u, ("units", i), None, units)
        return Manifest(
            source=source,
            demo=bool(d.get("demo", False)),
            tenant=tenant,
            digest=manifest_digest(d),
            units=tuple(units),
            roles=tuple(
                RoleSpec(
                    r["key"], r["name_zh"], r["name_en"], tuple(r["permissions"]), ("roles", i)
                )
                for i, r in enumerate(d.get("roles", []))
            ),
            people=tuple(self._person(p, ("people", i)) for i, p in enumerate(d.get("people", []))),
            customers=tuple(
                self._customer(c, ("customers", i)) for i, c in enumerate(d.get("customers", []))
            ),
            policies=tuple(
                self._policy(p, ("policies", i)) for i, p in enumerate(d.get("policies", []))
            ),
            cases=tuple(
                self._case(c, ("cases", i), zone) for i, c in enumerate(d.get("cases", []))
            ),
            plugins=tuple(
                PluginSpec(
                    p["plugin"],
                    p["unit"],
                    p.get("enabled", True),
                    dict(p.get("settings", {})),
                    ("plugins", i),
                )
                for i, p in enumerate(d.get("plugins", []))
            ),
            clients=tuple(
                ClientSpec(
                    c["key"],
                    c["name"],
                    tuple(c["scopes"]),
                    tuple(c.get("units", [])),
                    c.get("secret"),
                    ("clients", i),
                    public=bool(c.get("public", False)),
                    redirect_uris=tuple(c.get("redirect_uris", [])),
                )
                for i, c in enumerate(d.get("clients", []))
            ),
            raw=d,
        )

    def _unit(
        self, u: dict[str, Any], at: Path, enclosing: str | None, out: list[UnitSpec]
    ) -> None:
        parent = u.get("parent")
        if enclosing is not None:
            if parent is not None and parent != enclosing:
                self.errors.append(
                    (
                        (*at, "parent"),
                        f"parent {parent!r} contradicts the enclosing unit {enclosing!r}",
                    )
                )
            parent = enclosing
        out.append(
            UnitSpec(u["code"], u["name"], UnitKind(u["kind"]), u.get("name_en"), parent, at)
        )
        for j, child in enumerate(u.get("children", [])):
            self._unit(child, (*at, "children", j), u["code"], out)

    def _person(self, p: dict[str, Any], at: Path) -> PersonSpec:
        return PersonSpec(
            username=p["username"],
            display_name=p["display_name"],
            email=p.get("email"),
            phone=p.get("phone"),
            locale=p.get("locale", "zh-CN"),
            password=p.get("password"),
            roles=tuple(GrantSpec(g["role"], g["unit"]) for g in p.get("roles", [])),
            at=at,
        )

    def _customer(self, c: dict[str, Any], at: Path) -> CustomerSpec:
        return CustomerSpec(
            key=c["key"],
            kind=CustomerKind(c["kind"]),
            name=c["name"],
            phone=c.get("phone"),
            email=c.get("email"),
            id_type=c.get("id_type"),
            id_number=c.get("id_number"),
            address=c.get("address"),
            preferred_channel=ContactChannel(c.get("preferred_channel", "phone")),
            preferred_language=c.get("preferred_language", "zh-CN"),
            unit=c["unit"],
            at=at,
        )

    def _date(self, value: str, at: Path) -> date:
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.errors.append((at, f"{value!r} is not a date (YYYY-MM-DD)"))
            return date(1970, 1, 1)

    def _policy(self, p: dict[str, Any], at: Path) -> PolicySpec:
        lob = LineOfBusiness(p["line_of_business"])
        term = p.get("term_months")
        start = self._date(p["start_date"], (*at, "start_date"))
        if "cooling_off_end" in p:
            raw_end = p["cooling_off_end"]
            cooling = None if raw_end is None else self._date(raw_end, (*at, "cooling_off_end"))
        else:
            cooling = default_cooling_off_end(lob, term, start)
        return PolicySpec(
            number=p["number"],
            product_code=p["product"]["code"],
            product_name=p["product"]["name"],
            line_of_business=lob,
            term_months=term,
            start_date=start,
            cooling_off_end=cooling,
            status=p.get("status", "in_force"),
            unit=p["unit"],
            agent=p.get("agent"),
            policyholder=p["policyholder"],
            insured=p.get("insured"),
            at=at,
        )

    def _case(self, c: dict[str, Any], at: Path, zone: ZoneInfo) -> CaseSpec:
        raw = c["received_at"]
        try:
            received = datetime.fromisoformat(raw)
        except ValueError:
            self.errors.append(
                (
                    (*at, "received_at"),
                    f"{raw!r} is not a date-time (e.g. 2026-03-02T09:30:00+08:00)",
                )
            )
            received = datetime(1970, 1, 1, tzinfo=UTC)
        if received.tzinfo is None:
            received = received.replace(tzinfo=zone)
        return CaseSpec(
            number=c["number"],
            type=CaseType(c["type"]),
            channel=Channel(c["channel"]),
            state=c.get("state", "registered"),
            subject=c["subject"],
            description=c.get("description"),
            unit=c["unit"],
            customer=c.get("customer"),
            policy=c.get("policy"),
            assignee=c.get("assignee"),
            received_at=received.astimezone(UTC),
            at=at,
        )


def default_cooling_off_end(
    lob: LineOfBusiness, term_months: int | None, start: date
) -> date | None:
    """``start`` + 15 days for life, health and annuity policies longer than one year
    (no ``term_months``: whole of life); None otherwise. See :data:`COOLING_OFF_DAYS`."""
    if lob in _COOLING_OFF_LINES and (term_months is None or term_months > 12):
        return start + timedelta(days=COOLING_OFF_DAYS)
    return None


# --- entry points --------------------------------------------------------------------------


def parse_manifest(text: str, source: str) -> Manifest:
    """Parse and validate one manifest given as YAML text; ``source`` names it in errors.

    :raises ManifestError: bad YAML, a schema violation or a semantic error (all of them).
    """
    data, node = _read_yaml(text, source)

    def issues(errors: Iterable[tuple[Path, str]]) -> list[Issue]:
        found = [Issue(source, path, reason, _line_of(node, path)) for path, reason in errors]
        return sorted(found, key=lambda i: i.line or 0)

    if not isinstance(data, dict):
        raise ManifestError(issues([((), "a manifest is a YAML mapping with a 'tenant' key")]))
    shape = shape_errors(data)
    if shape:
        raise ManifestError(issues(shape))
    builder = _Builder(data)
    manifest = replace(builder.build(source), node=node)
    errors = builder.errors + semantic_errors(manifest)
    if errors:
        raise ManifestError(issues(errors))
    return manifest


def load_manifest(path: FsPath | str) -> Manifest:
    """Read and validate the manifest file ``path``."""
    source = str(path)
    try:
        text = FsPath(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Issue(source, (), f"cannot read: {exc}")]) from exc
    return parse_manifest(text, source)


def manifest_files(paths: Sequence[FsPath | str]) -> list[FsPath]:
    """``paths`` with every directory replaced by its ``*.yaml``/``*.yml`` files, sorted."""
    files: list[FsPath] = []
    for p in map(FsPath, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
        else:
            files.append(p)
    return files


def load_manifests(paths: Sequence[FsPath | str]) -> list[Manifest]:
    """Read and validate every manifest under ``paths`` (files or directories).

    All files are checked before any is returned; a slug may appear in one file only.

    :raises ManifestError: listing the issues of every bad file.
    """
    files = manifest_files(paths)
    issues: list[Issue] = []
    manifests: list[Manifest] = []
    if not files:
        raise ManifestError(
            [Issue(", ".join(map(str, paths)) or "(none)", (), "no manifest files (*.yaml) found")]
        )
    for f in files:
        try:
            manifests.append(load_manifest(f))
        except ManifestError as exc:
            issues += exc.issues
    first: dict[str, Manifest] = {}
    for m in manifests:
        if m.slug in first:
            issues.append(
                Issue(
                    m.source,
                    ("tenant", "slug"),
                    f"duplicate slug {m.slug!r} (also in {first[m.slug].source})",
                    _line_of(m.node, ("tenant", "slug")),
                )
            )
        else:
            first[m.slug] = m
    if issues:
        raise ManifestError(issues)
    return manifests
