"""Request dependencies of the case API: the flow context and the attachment store."""

from __future__ import annotations

from litestar.di import Provide
from sqlalchemy.orm import Session

from core.api.deps import API_DEPENDENCIES
from core.auth.guards import Access
from core.cases.flows import CaseContext, make_context
from core.cases.storage import storage_for
from core.plugins.host import PluginHost
from core.settings import Settings


def provide_case_context(
    session: Session, access: Access, plugins: PluginHost, settings: Settings
) -> CaseContext:
    """The flow context of this request: tenant, calendar, plugins, actor, attachment store."""
    return make_context(session, access, plugins=plugins, storage=storage_for(settings))


CASE_DEPENDENCIES: dict[str, Provide] = {
    **API_DEPENDENCIES,
    "ctx": Provide(provide_case_context, sync_to_thread=True),
}
"""Dependencies of the case controllers."""
