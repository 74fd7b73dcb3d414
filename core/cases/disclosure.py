"""What a caller sees of a case's free text and of a whistle-blower's identity.

A case's free text (subject, description, decisions, answers, reasons, notices, the timeline's
texts) is personal data: the customer's account of what happened, health and claim details.
Like a customer's fields (:mod:`core.customers.flows`) it is shown **masked** — the
identifiers in it (phone, identity and bank-card numbers, e-mail addresses) hidden by
:func:`core.privacy.masking.mask_text`, the narrative kept — unless the caller holds
``customers:read_clear`` at the case's unit **and** declares a purpose (``X-Purpose``). A
whistle-blower's identity is shown only to a caller holding ``cases:whistleblower`` there, with
a declared purpose. Every read in clear appends ``case.read_clear`` to the audit log: who,
which case, which fields, which purpose, from which client and address.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.api.problems import Problem
from core.audit import actor_from, record
from core.auth.guards import Access
from core.cases.models import CASE_TEXT_FIELDS, REPORTER_FIELDS, Case, CaseType
from core.orgs.models import OrgUnit
from core.privacy.purposes import check_purpose

READ_CLEAR = "customers:read_clear"
WHISTLEBLOWER = "cases:whistleblower"


@dataclass(frozen=True)
class Disclosure:
    """How one case is shown: its free text in clear, the reporter's identity in clear."""

    clear: bool = False
    reporter: bool = False


MASKED = Disclosure()


def unit_paths(session: Session, unit_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The path of each unit."""
    if not unit_ids:
        return {}
    rows = session.execute(select(OrgUnit.id, OrgUnit.path).where(OrgUnit.id.in_(unit_ids)))
    return {unit_id: path for unit_id, path in rows}


def disclose_cases(
    session: Session,
    access: Access,
    cases: Sequence[Case],
    *,
    purpose: str | None,
    source: str | None = None,
    paths: Mapping[uuid.UUID, str] | None = None,
    what: str = "case",
) -> dict[uuid.UUID, Disclosure]:
    """How each of ``cases`` is shown to the caller; clear reads are audited in the caller's
    transaction (commit it).

    :param what: ``case`` or ``timeline`` (recorded in the audit entry).
    :raises Problem: 422 for an unknown purpose; 403 when a purpose is declared by a caller who
        holds neither ``customers:read_clear`` nor ``cases:whistleblower`` anywhere.
    """
    if purpose is None:
        return {c.id: MASKED for c in cases}
    check_purpose(purpose)
    if not (access.has_anywhere(READ_CLEAR) or access.has_anywhere(WHISTLEBLOWER)):
        raise Problem(
            403,
            f"reading case texts in clear needs {READ_CLEAR!r} (or {WHISTLEBLOWER!r} for a "
            "reporter's identity)",
            slug="forbidden",
            permission=READ_CLEAR,
        )
    paths = paths if paths is not None else unit_paths(session, {c.unit_id for c in cases})
    actor = actor_from(access.principal, session)
    out = {}
    for c in cases:
        path = paths.get(c.unit_id, "\0")
        found = Disclosure(
            clear=access.can(READ_CLEAR, path),
            reporter=c.type == CaseType.WHISTLEBLOWING
            and not c.reporter_anonymous
            and access.can(WHISTLEBLOWER, path),
        )
        out[c.id] = found
        fields = [f for f in CASE_TEXT_FIELDS if found.clear and getattr(c, f) is not None]
        fields += [f for f in REPORTER_FIELDS if found.reporter and getattr(c, f) is not None]
        if fields or (found.clear and what == "timeline"):
            record(
                session,
                action="case.read_clear",
                actor=actor,
                target=("case", c.id),
                details={
                    "number": c.number,
                    "what": what,
                    "fields": fields,
                    "purpose": purpose,
                    "client_id": actor.client_id,
                },
                source=source,
            )
    return out


def disclose_case(
    session: Session,
    access: Access,
    case: Case,
    *,
    purpose: str | None,
    source: str | None = None,
    what: str = "case",
) -> Disclosure:
    """:func:`disclose_cases` for one case; a declared purpose that reveals nothing of this
    case (no permission at its unit) is a 403, not a silently masked answer."""
    found = disclose_cases(session, access, [case], purpose=purpose, source=source, what=what)[
        case.id
    ]
    if purpose is not None and not (found.clear or found.reporter):
        raise Problem(
            403,
            f"{READ_CLEAR!r} does not hold at this case's unit",
            slug="forbidden",
            permission=READ_CLEAR,
        )
    return found
