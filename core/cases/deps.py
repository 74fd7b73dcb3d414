"""Request dependencies of the case API: the flow context and the attachment store."""

from __future__ import annotations

import functools
from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide
from sqlalchemy.orm import Session

from core.api.deps import API_DEPENDENCIES
from core.api.handlers import run_with_database
from core.audit.services import source_of
from core.auth.guards import Access
from core.cases.flows import CaseContext, make_context
from core.cases.storage import storage_for
from core.plugins.host import PluginHost
from core.privacy.purposes import PURPOSE_HEADER
from core.settings import Settings


async def provide_case_context(
    request: Request[Any, Any, Any],
    session: NamedDependency[Session],
    access: NamedDependency[Access],
) -> CaseContext:
    """The flow context of this request: plugins, actor, attachment store, the purpose the
    caller declared (``X-Purpose``: free text in clear, see :mod:`core.cases.disclosure`) and
    its address; the tenant and its calendar are read by the handler when it needs them. No
    query here (the actor's name came with the token's state). The plugin host and settings
    are the app's (``app.state``: as dependencies, Litestar would resolve them in a task group
    on every request)."""
    plugins: PluginHost = request.app.state["plugins"]
    settings: Settings = request.app.state["settings"]
    build = functools.partial(
        make_context,
        session,
        access,
        plugins=plugins,
        storage=storage_for(settings),
        purpose=request.headers.get(PURPOSE_HEADER) or None,
        source=source_of(request),
    )
    principal = access.principal
    if principal.kind == "person" and principal.username is None:
        return await run_with_database(build)  # the actor's name is read
    return build()


CASE_DEPENDENCIES: dict[str, Provide] = {
    **API_DEPENDENCIES,
    "ctx": Provide(provide_case_context),
}
"""Dependencies of the case controllers."""
