"""The ext_authz filter and cluster options for Envoy's ``http_service`` mode, where
Envoy asks the HTTP door (``/envoy`` + the original path) instead of the gRPC door.

What crosses: Envoy sends the original method, ``Host``, path and query, and the
headers in ``allowed_headers`` (the credential, cookies, the request id and every
``x-`` header, where a route's token header may be). On ``200`` it copies the answer's
``x-`` headers onto the upstream request, overwriting the client's, and removes every
header the answer lists in ``x-envoy-auth-headers-to-remove``; on a denial it sends
the answer's status, headers and body to the client. ``context_extensions`` have no
HTTP equivalent: routes that match on them never match through this door.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ext_authz.deploy.envoy_config import EnvoyParams

HTTP_PATH_PREFIX = "/envoy"
HTTP_HEALTH_PATH = "/healthz"
_EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
# Identity headers go upstream by this rule: every identity header a policy sets must
# start with "x-" (or be added here).
UPSTREAM_HEADER_PREFIX = "x-"


def _seconds(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".") + "s"


def http_service_filter(params: EnvoyParams, cluster: str = "ext_authz") -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": _EXT_AUTHZ_TYPE,
            "http_service": {
                "server_uri": {
                    "uri": f"http://{cluster}",
                    "cluster": cluster,
                    "timeout": _seconds(params.ext_authz_timeout),
                },
                "path_prefix": HTTP_PATH_PREFIX,
                "authorization_response": {
                    "allowed_upstream_headers": {
                        "patterns": [{"prefix": UPSTREAM_HEADER_PREFIX, "ignore_case": True}]
                    },
                },
            },
            "allowed_headers": {
                "patterns": [
                    {"exact": "authorization", "ignore_case": True},
                    {"exact": "cookie", "ignore_case": True},
                    {"prefix": "x-", "ignore_case": True},
                ]
            },
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "status_on_error": {"code": 503},
        },
    }


def http_service_cluster_options(cluster: dict[str, Any]) -> None:
    """Keep-alive to the door shorter than the door's own idle timeout (300 s), so
    Envoy never sends a check on a connection the server is closing."""
    options = cluster["typed_extension_protocol_options"]
    for value in options.values():
        value["common_http_protocol_options"] = {"idle_timeout": "60s"}
