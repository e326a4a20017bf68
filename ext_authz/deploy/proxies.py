"""Configs for proxies in front of the HTTP door: nginx (`auth_request`) and Caddy
(`forward_auth`). docs/proxies.md shows what these render; the demo and the tests
run exactly these, so the documented configs are the tested ones.

Both follow one rule: an identity header reaches the upstream only as the door's
answer set it. nginx overwrites each with `proxy_set_header` from `auth_request_set`
(an empty value means the header is not sent at all); Caddy's `copy_headers` deletes a
listed header the answer lacks. Client spellings with underscores (`x_user_id`) are
dropped by nginx (`underscores_in_headers off`, its default) and by Caddy; the tests
check both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DRY_RUN_HEADER = "x-ext-authz-dry-run"


@dataclass(frozen=True, slots=True)
class ProxySite:
    """One proxy listener in front of one upstream, asking the door at `door`."""

    listen: str  # HOST:PORT the proxy listens on
    door: str  # HOST:PORT of `ext-authz serve --http-listen`
    upstream: str  # HOST:PORT of the protected service
    identity_headers: Sequence[str] = ("x-user-id", "x-user-email", "x-tenant-id")

    @property
    def copied_headers(self) -> tuple[str, ...]:
        return (*self.identity_headers, DRY_RUN_HEADER)


def _snake(header: str) -> str:
    return header.lower().replace("-", "_")


def _variable(header: str) -> str:
    return "authz_" + _snake(header)


def nginx_server_block(site: ProxySite) -> str:
    """The `upstream` and `server` blocks (inside `http { }`)."""
    sets = "\n".join(
        f"            auth_request_set ${_variable(h)} $upstream_http_{_snake(h)};"
        for h in site.copied_headers
    )
    overwrites = "\n".join(
        f"            proxy_set_header {h.title()} ${_variable(h)};" for h in site.copied_headers
    )
    return f"""\
    upstream ext_authz {{
        server {site.door};
        keepalive 16;
    }}
    upstream app {{
        server {site.upstream};
    }}
    server {{
        listen {site.listen};
        underscores_in_headers off;  # the default: a client's x_user_id is dropped

        location = /_ext_authz {{
            internal;
            proxy_pass http://ext_authz/auth-request;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Host $host;
            proxy_set_header X-Request-Id $request_id;
        }}

        location / {{
            auth_request /_ext_authz;
            auth_request_set $authz_status $upstream_status;
            auth_request_set $authz_challenge $upstream_http_www_authenticate;
{sets}
            # Every identity header is overwritten with the answer's value; an empty
            # value (the answer did not set it) means nginx does not send it at all.
{overwrites}
            error_page 403 = @ext_authz_403;
            error_page 500 = @ext_authz_error;
            proxy_pass http://app;
        }}

        # nginx copies WWW-Authenticate on a 401 by itself; a 403 needs it added.
        location @ext_authz_403 {{
            add_header WWW-Authenticate $authz_challenge always;
            return 403;
        }}
        # auth_request knows only 2xx, 401 and 403: anything else arrives as a 500.
        location @ext_authz_error {{
            if ($authz_status = 400) {{
                return 400;
            }}
            if ($authz_status = 500) {{
                return 500;
            }}
            return 503;
        }}
    }}
"""


def nginx_conf(site: ProxySite, state_dir: str, *, run_as_root: bool = False) -> str:
    """A whole nginx.conf (no daemon, logs and temp files in `state_dir`), for tests
    and the demo; in production put :func:`nginx_server_block` in your own."""
    user = "user root;\n" if run_as_root else ""
    temp = "\n".join(
        f"    {kind}_temp_path {state_dir}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
{user}worker_processes 1;
daemon off;
pid {state_dir}/nginx.pid;
error_log {state_dir}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
{temp}
{nginx_server_block(site)}}}
"""


def caddyfile(site: ProxySite, *, global_options: bool = True) -> str:
    host, _, port = site.listen.rpartition(":")
    copied = " ".join(h.title() for h in site.copied_headers)
    head = "{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\n\n" if global_options else ""
    return f"""\
{head}:{port} {{
\tbind {host}
\tforward_auth {site.door} {{
\t\turi /forward-auth
\t\t# copy_headers deletes a listed header from the request when the answer lacks it
\t\tcopy_headers {copied}
\t}}
\treverse_proxy {site.upstream}
}}
"""
