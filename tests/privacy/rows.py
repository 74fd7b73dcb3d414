"""Rows in every privacy table for a tenant, so the isolation suite (tests/tenancy) covers them.

Tenant keys come with the first encrypted customer; this adds a consent, a data-subject request
(with an encrypted note), a sharing agreement, a legal hold and a destruction record.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy.orm import Session

from core.db import utcnow
from core.privacy.models import (
    Consent,
    DataSubjectRequest,
    DestructionRecord,
    LegalHold,
    SharingAgreement,
)


def add_privacy_rows(
    session: Session, *, customer_id: uuid.UUID, unit_id: uuid.UUID, case_id: uuid.UUID
) -> None:
    """One row per privacy table, about ``customer_id``."""
    now = utcnow()
    session.add(
        Consent(
            customer_id=customer_id,
            purpose="marketing",
            given=False,
            channel="paper",
            notice_version="fixture",
            at=now,
            recorded_by="system:fixture",
        )
    )
    session.add(
        DataSubjectRequest(
            number=f"DSR-FIXTURE-{uuid.uuid4().hex[:6]}",
            kind="access",
            channel="letter",
            customer_id=customer_id,
            unit_id=unit_id,
            received_at=now,
            due_at=now + timedelta(days=21),
            last_day=date.today() + timedelta(days=21),
            working_days=15,
            created_by="system:fixture",
            note="客户来函要求查阅其个人信息",
        )
    )
    session.add(
        SharingAgreement(
            third_party="再保险公司 (fixture)",
            third_party_kind="reinsurer",
            purpose="再保险分出",
            fields=["name", "id_number"],
            legal_basis="contract",
            reference=f"RI-{uuid.uuid4().hex[:6]}",
            starts_on=date.today() - timedelta(days=1),
            expires_on=date.today() + timedelta(days=365),
            created_by="system:fixture",
        )
    )
    session.add(
        LegalHold(
            customer_id=customer_id,
            case_id=case_id,
            reason="dispute",
            reference="fixture",
            placed_by="system:fixture",
        )
    )
    session.add(
        DestructionRecord(
            run_id="fixture",
            batch=1,
            data_class="prospect",
            rule="fixture",
            method="anonymized",
            cutoff=now,
            count=0,
            actor="system:fixture",
            started_at=now,
        )
    )
    session.flush()
