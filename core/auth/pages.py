"""The sign-in page of ``/oauth/authorize`` and its error page: plain server-rendered HTML.

Everything interpolated is escaped. The pages forbid framing and caching; the form posts back
to the same URL (its query string carries the OAuth request), so nothing is kept server-side
between the two requests.
"""

from __future__ import annotations

from html import escape
from typing import Any

from litestar import Response

from core.people.permissions import PERMISSIONS

_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_STYLE = (
    "body{font-family:system-ui,'PingFang SC','Microsoft YaHei',sans-serif;background:#f4f6f8;"
    "margin:0}main{max-width:24rem;margin:4rem auto;background:#fff;padding:2rem;"
    "border-radius:8px;box-shadow:0 1px 4px #0002}h1{font-size:1.25rem;margin-top:0}"
    "label{display:block;margin:.75rem 0 .25rem}input[type=text],input[type=password]{"
    "width:100%;padding:.5rem;box-sizing:border-box}.error{color:#b00020}"
    "button{margin-top:1rem;padding:.5rem 1rem}ul{padding-left:1.2rem;color:#555}"
)

INVALID_CREDENTIALS = "用户名或密码错误。Invalid username or password."


def _page(title: str, body: str, status: int) -> Response[Any]:
    html = (
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return Response(
        content=html,
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers=dict(_HEADERS),
    )


def login_page(
    *,
    client_name: str,
    tenant_name: str,
    scope: str,
    username: str = "",
    error: str | None = None,
    status: int = 200,
) -> Response[Any]:
    """The sign-in form for a person of ``tenant_name`` on behalf of ``client_name``."""
    scopes = "".join(
        f"<li>{escape(PERMISSIONS.get(s, s))} <code>{escape(s)}</code></li>" for s in scope.split()
    )
    error_html = f"<p class='error' role='alert'>{escape(error)}</p>" if error else ""
    body = (
        f"<h1>登录 {escape(tenant_name)} · Sign in</h1>"
        f"<p><strong>{escape(client_name)}</strong> 请求以下权限 · asks for:</p><ul>{scopes}</ul>"
        f"{error_html}"
        "<form method='post'>"
        "<label for='username'>用户名 · Username</label>"
        f"<input id='username' name='username' type='text' autocomplete='username' "
        f"value='{escape(username, quote=True)}' required autofocus>"
        "<label for='password'>密码 · Password</label>"
        "<input id='password' name='password' type='password' "
        "autocomplete='current-password' required>"
        "<button type='submit' name='action' value='allow'>登录并授权 · Sign in</button> "
        "<button type='submit' name='action' value='deny' formnovalidate>取消 · Cancel</button>"
        "</form>"
    )
    return _page("登录 · Sign in", body, status)


def error_page(error: str, description: str | None, status: int = 400) -> Response[Any]:
    """An authorization request that cannot be sent back to the client (bad client/URI)."""
    body = (
        "<h1>授权请求无效 · Invalid authorization request</h1>"
        f"<p class='error'><code>{escape(error)}</code> {escape(description or '')}</p>"
    )
    return _page("授权请求无效 · Invalid request", body, status)
