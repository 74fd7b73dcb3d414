"""The application factory: settings in, a Litestar app out. No globals, no import-time I/O."""

from __future__ import annotations

import gc
import importlib
import pkgutil
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

import core
from core.api.problems import EXCEPTION_HANDLERS
from core.db import Database
from core.logging import configure_logging
from core.models import import_all_models
from core.settings import Settings, load_settings


def discover_routes() -> list[Any]:
    """Route handlers of every domain: the ``ROUTES`` list of each ``core.<domain>.controllers``."""
    routes: list[Any] = []
    for info in sorted(pkgutil.iter_modules(core.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        try:
            module = importlib.import_module(f"core.{info.name}.controllers")
        except ModuleNotFoundError as exc:
            if exc.name != f"core.{info.name}.controllers":
                raise
            continue
        routes.extend(getattr(module, "ROUTES", []))
    return routes


def create_app(settings: Settings | None = None, database: Database | None = None) -> Litestar:
    """Build the platform's ASGI app.

    :param settings: defaults to :func:`core.settings.load_settings` (the environment).
    :param database: defaults to a :class:`core.db.Database` built from ``settings``.
    """
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    import_all_models()
    db = database or Database(
        settings.effective_database_url, settings.effective_admin_database_url
    )
    if database is None:  # personal fields of this database are unwrapped with its master key
        from core.privacy.keys import attach, key_manager_for

        attach(db, key_manager_for(settings))

    from core.api.handlers import database_middleware
    from core.api.idempotency import idempotency_middleware
    from core.api.openapi import finished_openapi_plugin
    from core.api.ratelimit import TAKEN_KEY, RateLimiter, make_backend, rate_limit_middleware
    from core.auth.keys import ensure_signing_key
    from core.auth.middleware import auth_middleware
    from core.auth.state_cache import AuthStateCache
    from core.outbox.embedded import embedded_lifespans
    from core.plugins.host import PluginHost
    from core.plugins.registry import build_registry

    plugins = PluginHost(build_registry(), db)  # installed plugins + per-tenant cache
    limiter = RateLimiter(settings, make_backend(settings, db))
    auth_cache = AuthStateCache(db, max_age=settings.auth_cache_seconds)  # PostgreSQL only

    def on_startup(app: Litestar) -> None:
        ensure_signing_key(db)
        plugins.start()
        auth_cache.start()

    async def on_shutdown(app: Litestar) -> None:
        auth_cache.close()
        plugins.close()
        if limiter.backend is not None:
            await limiter.backend.close()
        await db.release_loop()  # this loop's bridged connections (decision 0010)
        if database is None:
            db.dispose()

    openapi = OpenAPIConfig(
        title="insurdesk API",
        version="1.0.0",
        description=(
            "Customer-service management for insurers. Every `/api/v1` operation needs a bearer "
            "access token from this platform's OAuth 2.0 server; errors are RFC 9457 "
            "problem details."
        ),
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), finished_openapi_plugin(settings)],
        components=Components(
            security_schemes={
                "oauth2": SecurityScheme(
                    type="oauth2",
                    description="OAuth 2.0: client credentials for integrators, authorization "
                    "code with PKCE for people. Scopes are `<resource>:<action>`.",
                    flows=_oauth_flows(settings),
                )
            }
        ),
        security=[{"oauth2": []}],
    )
    return Litestar(
        route_handlers=discover_routes(),
        state=State(
            {
                "settings": settings,
                "db": db,
                "plugins": plugins,
                "rate_limiter": limiter,
                "auth_cache": auth_cache,
            }
        ),
        dependencies={
            "settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False),
            "db": Provide(lambda: db, use_cache=True, sync_to_thread=False),
            "plugins": Provide(lambda: plugins, use_cache=True, sync_to_thread=False),
        },
        middleware=[
            database_middleware(db),
            auth_middleware(
                settings,
                db,
                # the database rate limiter takes its tokens with the authentication
                hooks={TAKEN_KEY: limiter.in_auth_transaction} if limiter.in_database else None,
                cache=auth_cache,
                quick_hooks={TAKEN_KEY: limiter.spend_leased},
            ),
            rate_limit_middleware(limiter),
            idempotency_middleware(settings, db),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi,
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        lifespan=embedded_lifespans(settings, db),
        request_max_body_size=settings.max_body_bytes,
        on_app_init=[_no_op_init],
        debug=False,
    )


def freeze_startup_heap() -> None:
    """Move every object alive once the app is built (modules, models, SQLAlchemy's metadata,
    the app, its routes, the plugin registry) out of the cyclic garbage collector's reach
    (:func:`gc.freeze`): they live as long as the server process, yet each full collection
    walked all of them again. Measured on ``bench/api.py``: a queue page 3.5 → 2.8 ms of CPU.
    Objects made later are collected as before. For server processes (``insurdesk serve``,
    :func:`app_from_env`), not for tests that build many apps in one process."""
    gc.collect()
    gc.freeze()


def _no_op_init(app_config: AppConfig) -> AppConfig:
    return app_config


def _oauth_flows(settings: Settings) -> Any:
    from litestar.openapi.spec import OAuthFlow, OAuthFlows

    from core.people.permissions import PERMISSIONS

    return OAuthFlows(
        client_credentials=OAuthFlow(
            token_url=f"{settings.issuer}/oauth/token", scopes=dict(PERMISSIONS)
        ),
        authorization_code=OAuthFlow(
            authorization_url=f"{settings.issuer}/oauth/authorize",
            token_url=f"{settings.issuer}/oauth/token",
            scopes=dict(PERMISSIONS),
        ),
    )


def app_from_env() -> Litestar:
    """Entry point for ASGI servers: ``uvicorn --factory core.app:app_from_env`` (what
    ``insurdesk serve`` runs). The start-up heap is frozen (:func:`freeze_startup_heap`)."""
    app = create_app(load_settings())
    freeze_startup_heap()
    return app
