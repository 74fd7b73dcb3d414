"""``insurdesk login``: a person's access token from the command line (authorization code + PKCE).

The command plays the part of a public client application: it opens the authorization request
against the running server, answers the login form with the person's credentials (the password
comes from a hidden prompt or ``INSURDESK_PASSWORD``, never a flag), reads the code from the
redirect it is given, and exchanges it with the PKCE verifier at the token endpoint.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

import httpx
import typer

with warnings.catch_warnings():  # authlib announces a future module rename on import
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import OAuth2Client

from core.settings import load_settings

DEFAULT_CLIENT_KEY = "console-cli"
DEFAULT_REDIRECT = "http://127.0.0.1/insurdesk/callback"


def login(
    tenant: Annotated[str, typer.Option(help="The tenant's slug, e.g. huaxia.")],
    username: Annotated[str, typer.Option(help="Your username in that tenant.")],
    client: Annotated[
        str | None, typer.Option(help="A public client id (default: <tenant>.console-cli).")
    ] = None,
    scope: Annotated[
        str | None,
        typer.Option(help="Space-separated scopes (default: all the client may ask for)."),
    ] = None,
    redirect_uri: Annotated[
        str, typer.Option(help="The client's registered redirect URI.")
    ] = DEFAULT_REDIRECT,
    server: Annotated[
        str | None, typer.Option(help="Base URL of the platform (default: INSURDESK_ISSUER).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole token response.")
    ] = False,
) -> None:
    """Sign in as a person and print an access token (for curl: -H "Authorization: Bearer ...")."""
    base = (server or load_settings().issuer).rstrip("/")
    password = os.environ.get("INSURDESK_PASSWORD") or typer.prompt("Password", hide_input=True)
    client_id = client or f"{tenant}.{DEFAULT_CLIENT_KEY}"
    oauth = OAuth2Client(
        client_id,
        None,
        redirect_uri=redirect_uri,
        scope=scope,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = secrets.token_urlsafe(48)
    url, state = oauth.create_authorization_url(f"{base}/oauth/authorize", code_verifier=verifier)
    try:
        with httpx.Client(timeout=15) as http:
            answer = http.post(
                url, data={"username": username, "password": password, "action": "allow"}
            )
    except httpx.TransportError as exc:
        typer.echo(f"error: cannot reach {base}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if answer.status_code != 302:
        reason = "wrong username or password" if answer.status_code == 200 else answer.text[:300]
        typer.echo(f"error: sign-in refused ({answer.status_code}): {reason}", err=True)
        raise typer.Exit(2)
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    if "code" not in query or query.get("state", [None])[0] != state:
        typer.echo(f"error: authorization failed: {query.get('error', ['no code'])[0]}", err=True)
        raise typer.Exit(2)
    token = oauth.fetch_token(f"{base}/oauth/token", code=query["code"][0], code_verifier=verifier)
    typer.echo(json.dumps(dict(token), indent=2) if as_json else token["access_token"])
