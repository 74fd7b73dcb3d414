"""Request dependencies of the case API: the flow context and the attachment store."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import Provide
from sqlalchemy.orm import Session

from core.api.deps import API_DEPENDENCIES
from core.audit.services import source_of
from core.auth.guards import Access
from core.cases.flows import CaseContext, make_context
from core.cases.storage import storage_for
from core.plugins.host import PluginHost
from core.privacy.purposes import PURPOSE_HEADER
from core.settings import Settings


def provide_case_context(
    request: Request[Any, Any, Any],
    session: Session,
    access: Access,
    plugins: PluginHost,
    settings: Settings,
) -> CaseContext:
    """The flow context of this request: tenant, calendar, plugins, actor, attachment store,
    the purpose the caller declared (``X-Purpose``: free text in clear, see
    :mod:`core.cases.disclosure`) and its address."""
    return make_context(
        session,
        access,
        plugins=plugins,
        storage=storage_for(settings),
        purpose=request.headers.get(PURPOSE_HEADER) or None,
        source=source_of(request),
    )


CASE_DEPENDENCIES: dict[str, Provide] = {
    **API_DEPENDENCIES,
    "ctx": Provide(provide_case_context, sync_to_thread=True),
}
"""Dependencies of the case controllers."""
