"""Validation of tenant manifests: the JSON Schema (shape) and the semantic checks.

Every problem is an :class:`Issue` naming the file, the line (when known), the path inside
the manifest (``units[1].children[0].parent``) and the reason; a manifest with any issue is
refused as a whole with :class:`ManifestError` before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from core.cases.lifecycle import states_of
from core.people.permissions import ALL_PERMISSIONS, BUILTIN_ROLES

if TYPE_CHECKING:
    from tenants.manifests import Manifest

PathPart = str | int
Path = tuple[PathPart, ...]

BUILTIN_ROLE_KEYS: frozenset[str] = frozenset(r.key for r in BUILTIN_ROLES)


def format_path(path: Sequence[PathPart]) -> str:
    """``("units", 1, "children", 0, "parent")`` → ``units[1].children[0].parent``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True)
class Issue:
    """One problem in a manifest file."""

    file: str
    path: Path
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        inside = format_path(self.path)
        return f"{where}: {inside}: {self.reason}" if inside else f"{where}: {self.reason}"


class ManifestError(ValueError):
    """A manifest (or a set of manifests) cannot be applied; nothing was written.

    ``str(error)`` has one line per issue: ``FILE:LINE: PATH: reason``.
    """

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues: list[Issue] = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


# --- shape ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (``tenants/manifest_schema.json``)."""
    text = resources.files("tenants").joinpath("manifest_schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    schema = manifest_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _reason(error: ValidationError) -> str:
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field(s)")
    if error.validator == "pattern":
        return f"{error.instance!r} does not have the expected form ({error.validator_value})"
    if error.validator == "oneOf" and error.context:
        return min(error.context, key=lambda e: len(e.message)).message
    return error.message


def shape_errors(data: Any) -> list[tuple[Path, str]]:
    """JSON Schema errors of ``data`` as ``(path, reason)``, in document order."""
    errors = sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.path])
    return [(tuple(e.absolute_path), _reason(e)) for e in errors]


# --- semantics -----------------------------------------------------------------------------


def _duplicates(
    items: Iterable[tuple[str, Path]], what: str, field: str
) -> Iterator[tuple[Path, str]]:
    seen: dict[str, Path] = {}
    for value, at in items:
        if value in seen:
            yield (*at, field), f"duplicate {what} {value!r} (first at {format_path(seen[value])})"
        else:
            seen[value] = at


def semantic_errors(manifest: Manifest) -> list[tuple[Path, str]]:
    """What the schema cannot say: duplicates, references, cycles, permissions, secrets.

    References must resolve inside the manifest itself (a unit code, role key, username,
    customer key or policy number it defines), so a manifest is checked without a database.
    """
    m = manifest
    errors: list[tuple[Path, str]] = []
    add = errors.append

    # duplicates
    errors += _duplicates(((u.code, u.at) for u in m.units), "unit code", "code")
    errors += _duplicates(((r.key, r.at) for r in m.roles), "role key", "key")
    errors += _duplicates(((p.username, p.at) for p in m.people), "username", "username")
    errors += _duplicates(((c.key, c.at) for c in m.customers), "customer key", "key")
    errors += _duplicates(((p.number, p.at) for p in m.policies), "policy number", "number")
    errors += _duplicates(((c.number, c.at) for c in m.cases), "case number", "number")
    errors += _duplicates(((c.key, c.at) for c in m.clients), "client key", "key")
    errors += _duplicates(
        ((f"{p.plugin}@{p.unit}", p.at) for p in m.plugins), "plugin setting", "unit"
    )

    units = {u.code: u for u in m.units}
    people = {p.username for p in m.people}
    customers = {c.key for c in m.customers}
    policies = {p.number: p for p in m.policies}
    role_keys = BUILTIN_ROLE_KEYS | {r.key for r in m.roles}

    def unit_ref(code: str | None, at: Path) -> None:
        if code is not None and code not in units:
            add((at, f"unknown unit {code!r}"))

    # units: parents and cycles
    for u in m.units:
        if u.parent is not None and u.parent not in units:
            add(((*u.at, "parent"), f"unknown parent unit {u.parent!r}"))
    errors += _cycles(m)

    # roles
    for r in m.roles:
        if r.key in BUILTIN_ROLE_KEYS:
            add(((*r.at, "key"), f"{r.key!r} is a built-in role; give your own role another key"))
        for i, perm in enumerate(r.permissions):
            if perm not in ALL_PERMISSIONS:
                add(((*r.at, "permissions", i), f"unknown permission {perm!r}"))

    # people
    for p in m.people:
        if p.password is not None and not m.demo:
            add(
                (
                    (*p.at, "password"),
                    "passwords are allowed only in demo manifests (demo: true); people of a "
                    "production tenant set their own password",
                )
            )
        seen_grants: set[tuple[str, str]] = set()
        for i, g in enumerate(p.roles):
            at = (*p.at, "roles", i)
            if g.role not in role_keys:
                add(((*at, "role"), f"unknown role {g.role!r} (neither built-in nor in roles)"))
            unit_ref(g.unit, (*at, "unit"))
            if (g.role, g.unit) in seen_grants:
                add((at, f"role {g.role!r} at {g.unit!r} is listed twice"))
            seen_grants.add((g.role, g.unit))

    # customers, policies, cases
    for c in m.customers:
        unit_ref(c.unit, (*c.at, "unit"))
    for pol in m.policies:
        unit_ref(pol.unit, (*pol.at, "unit"))
        if pol.agent is not None and pol.agent not in people:
            add(((*pol.at, "agent"), f"unknown person {pol.agent!r}"))
        for field in ("policyholder", "insured"):
            key = getattr(pol, field)
            if key is not None and key not in customers:
                add(((*pol.at, field), f"unknown customer {key!r}"))
        if pol.cooling_off_end is not None and pol.cooling_off_end < pol.start_date:
            add(((*pol.at, "cooling_off_end"), "cooling_off_end is before start_date"))
    for case in m.cases:
        unit_ref(case.unit, (*case.at, "unit"))
        if case.customer is not None and case.customer not in customers:
            add(((*case.at, "customer"), f"unknown customer {case.customer!r}"))
        if case.policy is not None and case.policy not in policies:
            add(((*case.at, "policy"), f"unknown policy {case.policy!r}"))
        if case.assignee is not None and case.assignee not in people:
            add(((*case.at, "assignee"), f"unknown person {case.assignee!r}"))
        if case.state not in states_of(case.type):
            add(
                (
                    (*case.at, "state"),
                    f"{case.state!r} is not a state of a {case.type.value} case "
                    f"({', '.join(states_of(case.type))})",
                )
            )

    # plugins and clients
    for pl in m.plugins:
        unit_ref(pl.unit, (*pl.at, "unit"))
    for cl in m.clients:
        for i, code in enumerate(cl.units):
            unit_ref(code, (*cl.at, "units", i))
        for i, scope in enumerate(cl.scopes):
            if scope not in ALL_PERMISSIONS:
                add(((*cl.at, "scopes", i), f"unknown scope {scope!r}"))
        if cl.secret is not None and not m.demo:
            add(
                (
                    (*cl.at, "secret"),
                    "client secrets are allowed only in demo manifests (demo: true); register "
                    "production clients with `insurdesk clients`",
                )
            )
    return errors


def _cycles(m: Manifest) -> list[tuple[Path, str]]:
    parent = {u.code: u.parent for u in m.units}
    at = {u.code: u.at for u in m.units}
    reported: set[str] = set()
    errors: list[tuple[Path, str]] = []
    for start in parent:
        chain: list[str] = []
        code: str | None = start
        while code is not None and code in parent and code not in chain:
            chain.append(code)
            code = parent[code]
        if code is not None and code in chain:
            loop = chain[chain.index(code) :]
            if not reported.intersection(loop):
                reported.update(loop)
                first = min(loop, key=lambda c: [str(p) for p in at[c]])
                cycle = " → ".join([*loop, code])
                errors.append(((*at[first], "parent"), f"the units form a cycle: {cycle}"))
    return errors
