"""``insurdesk clients``: API clients of a tenant, and (``clients keys``) the signing keys.

A new or rotated client secret is printed once, and never stored in clear. Keys are changed
through the owner's connection (``INSURDESK_ADMIN_DATABASE_URL``) and audited.
"""

from __future__ import annotations

import getpass
from datetime import timedelta
from typing import Annotated

import typer

from core.api.problems import Problem
from core.db import Database
from core.orgs.services import get_unit_by_code
from core.settings import load_settings

cli = typer.Typer(
    name="clients",
    no_args_is_help=True,
    add_completion=False,
    help="OAuth API clients of a tenant (docs/auth.md); `keys` manages token signing keys.",
)
keys_cli = typer.Typer(
    name="keys",
    no_args_is_help=True,
    add_completion=False,
    help="Access-token signing keys: ensure one exists, rotate, list.",
)
cli.add_typer(keys_cli, name="keys")


def _database() -> Database:
    settings = load_settings()
    return Database(settings.effective_database_url, settings.effective_admin_database_url)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _tenant_id(db: Database, slug: str) -> object:
    from core.auth.server import find_tenant

    tenant = find_tenant(db, slug)
    if tenant is None:
        typer.echo(f"error: no active tenant {slug!r}", err=True)
        raise typer.Exit(2)
    return tenant.id


def _fail(problem: Problem) -> typer.Exit:
    typer.echo(f"error: {problem.detail}", err=True)
    return typer.Exit(2)


@cli.command("create")
def create_command(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    name: Annotated[str, typer.Option(help="A name people recognise, e.g. the integrator.")],
    scope: Annotated[
        list[str], typer.Option("--scope", help="A permission, e.g. cases:read (repeatable).")
    ],
    unit: Annotated[
        list[str] | None,
        typer.Option("--unit", help="Code of an org unit the client acts for (repeatable)."),
    ] = None,
    grant: Annotated[
        list[str] | None,
        typer.Option("--grant", help="Grant type (repeatable); default client_credentials."),
    ] = None,
    redirect_uri: Annotated[
        list[str] | None,
        typer.Option("--redirect-uri", help="Redirect URI (authorization_code clients)."),
    ] = None,
    auth_method: Annotated[
        str,
        typer.Option(help="client_secret_basic, client_secret_post, private_key_jwt or none."),
    ] = "client_secret_basic",
) -> None:
    """Register a client; prints its client_id and, once, its secret."""
    from core.auth.services import create_client

    db = _database()
    try:
        tid = _tenant_id(db, tenant)
        with db.tenant_transaction(tid) as session:  # type: ignore[arg-type]
            unit_ids = []
            for code in unit or []:
                found = get_unit_by_code(session, code)
                if found is None:
                    typer.echo(f"error: no unit with code {code!r} in {tenant}", err=True)
                    raise typer.Exit(2)
                unit_ids.append(found.id)
            client, secret = create_client(
                session,
                name=name,
                scopes=scope,
                unit_ids=unit_ids,
                grant_types=tuple(grant or ("client_credentials",)),
                redirect_uris=tuple(redirect_uri or ()),
                auth_method=auth_method,
            )
    except Problem as problem:
        raise _fail(problem) from None
    finally:
        db.dispose()
    typer.echo(f"client_id:     {client.client_id}")
    if secret:
        typer.echo(f"client_secret: {secret}")
        typer.echo("The secret is shown only now; store it in the integrator's secret store.")


@cli.command("list")
def list_command(tenant: Annotated[str, typer.Option(help="Tenant slug.")]) -> None:
    """List the tenant's clients (never their secrets)."""
    from core.auth.services import list_clients

    db = _database()
    try:
        with db.tenant_transaction(_tenant_id(db, tenant)) as session:  # type: ignore[arg-type]
            for c in list_clients(session):
                state = "active" if c.active else "disabled"
                typer.echo(
                    f"{c.client_id}\t{state}\t{c.token_endpoint_auth_method}\t"
                    f"{','.join(c.grant_types)}\t{' '.join(c.scopes)}\t{c.name}"
                )
    finally:
        db.dispose()


def _client_tenant(db: Database, client_id: str) -> object:
    return _tenant_id(db, client_id.rpartition(".")[0])


@cli.command("disable")
def disable_command(client_id: Annotated[str, typer.Argument(help="The client id.")]) -> None:
    """Disable a client: its tokens stop working at once."""
    from core.auth.services import disable_client

    db = _database()
    try:
        with db.tenant_transaction(_client_tenant(db, client_id)) as session:  # type: ignore[arg-type]
            disable_client(session, client_id)
    except Problem as problem:
        raise _fail(problem) from None
    finally:
        db.dispose()
    typer.echo(f"{client_id} disabled")


@cli.command("rotate-secret")
def rotate_secret_command(
    client_id: Annotated[str, typer.Argument(help="The client id.")],
) -> None:
    """Give a client a new secret (printed once); the old one stops working at once."""
    from core.auth.services import rotate_client_secret

    db = _database()
    try:
        with db.tenant_transaction(_client_tenant(db, client_id)) as session:  # type: ignore[arg-type]
            secret = rotate_client_secret(session, client_id)
    except Problem as problem:
        raise _fail(problem) from None
    finally:
        db.dispose()
    typer.echo(f"client_secret: {secret}")


@keys_cli.command("ensure")
def keys_ensure_command() -> None:
    """Create a signing key if none is active (run after `insurdesk migrate`)."""
    from core.auth.keys import ensure_signing_key

    db = _database()
    try:
        typer.echo(f"active signing key: {ensure_signing_key(db, actor=_actor())}")
    finally:
        db.dispose()


@keys_cli.command("rotate")
def keys_rotate_command(
    activate_after: Annotated[
        int, typer.Option(help="Minutes the new key is published before it signs.")
    ] = 10,
    algorithm: Annotated[
        str | None, typer.Option(help="RS256 or ES256 (default: the current key's).")
    ] = None,
) -> None:
    """Publish a new signing key now; it signs after the delay, the old one then retires."""
    from core.auth.keys import rotate_signing_key

    settings = load_settings()
    db = _database()
    try:
        kid = rotate_signing_key(
            db,
            activate_after=timedelta(minutes=activate_after),
            token_ttl=timedelta(seconds=settings.access_token_ttl),
            algorithm=algorithm,
            actor=_actor(),
        )
    finally:
        db.dispose()
    typer.echo(f"new signing key {kid}, signing in {activate_after} minutes")


@keys_cli.command("list")
def keys_list_command() -> None:
    """List signing keys and their life cycle (never the private keys)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from core.auth.models import SigningKey

    db = _database()
    try:
        with Session(db.engine) as session:
            for k in session.scalars(select(SigningKey).order_by(SigningKey.activate_at)):
                typer.echo(
                    f"{k.kid}\t{k.algorithm}\tactivates {k.activate_at:%Y-%m-%d %H:%M}Z\t"
                    f"retires {k.retire_at or '-'}\texpires {k.expires_at or '-'}"
                )
    finally:
        db.dispose()
