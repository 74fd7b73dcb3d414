"""Organization units: the group → company → branch → sub-branch tree, agencies, centres."""

from __future__ import annotations

import enum
import uuid

from sqlalchemy import Enum, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, TenantScoped, Timestamped, tenant_fk


class UnitKind(enum.StrEnum):
    """What an organization unit is."""

    GROUP = "group"  # 保险集团
    COMPANY = "company"  # 保险公司 (subsidiary)
    BRANCH = "branch"  # 分公司 (二级)
    SUB_BRANCH = "sub_branch"  # 中心支公司 / 支公司 (三级)
    AGENCY = "agency"  # 保险代理机构
    SERVICE_CENTRE = "service_centre"  # 客户服务中心
    DEPARTMENT = "department"  # 部门 (运营管理部, 客服处 ...)


class OrgUnit(TenantScoped, Timestamped, Base):
    """A node of the tenant's organization tree.

    ``path`` is the materialized path of ids from the root, ``/<root>/<...>/<self>/``, so the
    descendants of a unit are ``path LIKE '<its path>%'`` (an index range scan) and its
    ancestors are the ids in its own path (no query at all).
    """

    __tablename__ = "org_units"
    __table_args__ = (
        tenant_fk("parent_id", "org_units"),
        UniqueConstraint("tenant_id", "code"),
        Index("ix_org_units_tenant_path", "tenant_id", "path"),
    )

    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str | None] = mapped_column(String(200), default=None)
    kind: Mapped[UnitKind] = mapped_column(
        Enum(UnitKind, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])
    )
    parent_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    path: Mapped[str] = mapped_column(String(1200))
    depth: Mapped[int] = mapped_column(default=0)
    active: Mapped[bool] = mapped_column(default=True)

    def ancestor_ids(self) -> list[uuid.UUID]:
        """Ids from the root down to this unit, itself included."""
        return [uuid.UUID(p) for p in self.path.strip("/").split("/") if p]
