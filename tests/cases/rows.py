"""Rows in every case table for a tenant, so the isolation suite (tests/tenancy) covers them.

Categories come from provisioning (``seed_case_categories``); this adds, for a fixture case, a
clock, a timeline event, an attachment record, a counter and a saved view.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy.orm import Session

from core.cases.models import Attachment, Case, CaseClock, CaseCounter, CaseEvent, CaseView
from core.db import utcnow


def add_case_rows(session: Session, *, case: Case, person_id: uuid.UUID) -> None:
    """One clock, one event, one attachment record, one counter and one saved view."""
    now = utcnow()
    session.add(
        CaseClock(
            case_id=case.id,
            clock="complaint.decision",
            citation="2020-complaints/18",
            source="statutory_cn",
            statutory=True,
            amount=15,
            unit="natural_days",
            started_at=now,
            due_at=now + timedelta(days=15),
            last_day=date.today() + timedelta(days=15),
            history={},
        )
    )
    case.last_event_seq = 1
    session.add(
        CaseEvent(case_id=case.id, seq=1, kind="registered", actor="system:fixture", at=now)
    )
    session.add(
        Attachment(
            case_id=case.id,
            filename="fixture.txt",
            media_type="text/plain",
            size=0,
            sha256="0" * 64,
            storage_key=f"fixture/{case.id}",
            key_version=0,  # a record without a file in any store (core.privacy.files.NO_FILE)
            uploaded_by="system:fixture",
        )
    )
    session.add(CaseCounter(key=f"fixture:{case.id}", value=1))
    session.add(CaseView(person_id=person_id, name=f"fixture {case.id}", filters={}))
    session.flush()
