"""Static checks of the mesh and gateway wiring: the shared ext-authz service, Istio's
extension providers and AuthorizationPolicy, Envoy Gateway's SecurityPolicy.

Published schemas where a package ships them: the Kubernetes API (kubernetes-validate)
for the service, and Istio's CRD-generated models (cloudcoil-models-istio) for the
AuthorizationPolicy, round-tripped so that an unknown field fails. Istio's MeshConfig
and Envoy Gateway's and Gateway API's types have no such package: their fields are
listed below from the documented API versions (named in docs/deployment.md), and every
field the manifests use must be among them. Then the pieces are cross-checked: every
reference resolves to a Service port that exists, nothing fails open, and the policy
loads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudcoil.models.istio.security.v1 import AuthorizationPolicy

from ext_authz.policy.loader import load_policy

REPO = Path(__file__).resolve().parent.parent
SERVICE = REPO / "deploy" / "ext-authz-service" / "ext-authz.yaml"
MESH_CONFIG = REPO / "deploy" / "istio" / "mesh-config.yaml"
ISTIO_POLICY = REPO / "deploy" / "istio" / "authorization-policy.yaml"
GATEWAY = REPO / "deploy" / "envoy-gateway" / "security-policy.yaml"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"
KUBERNETES_VERSIONS = ("1.29", "1.33")
GRPC_PORT = 9001
HTTP_DOOR_PORT = 9080
HTTP_DOOR_PREFIX = "/envoy"

# A schema is a mapping of allowed field -> schema of its value (None: a leaf); a list
# in the schema means a list of items of that schema.
Schema = Mapping[str, Any] | list[Any] | None

# istio.mesh.v1alpha1 MeshConfig.ExtensionProvider, Istio 1.24 (the two ext_authz kinds)
_EXT_AUTHZ_BODY: Schema = {
    "maxRequestBytes": None,
    "allowPartialMessage": None,
    "packAsBytes": None,
}
ISTIO_EXTENSION_PROVIDER: Schema = {
    "name": None,
    "envoyExtAuthzGrpc": {
        "service": None,
        "port": None,
        "timeout": None,
        "failOpen": None,
        "statusOnError": None,
        "includeRequestBodyInCheck": _EXT_AUTHZ_BODY,
    },
    "envoyExtAuthzHttp": {
        "service": None,
        "port": None,
        "timeout": None,
        "pathPrefix": None,
        "failOpen": None,
        "statusOnError": None,
        "includeRequestHeadersInCheck": [None],
        "includeAdditionalHeadersInCheck": {},  # a map: any key
        "includeRequestBodyInCheck": _EXT_AUTHZ_BODY,
        "headersToUpstreamOnAllow": [None],
        "headersToDownstreamOnDeny": [None],
        "headersToDownstreamOnAllow": [None],
    },
}
ISTIO_OPERATOR: Schema = {
    "apiVersion": None,
    "kind": None,
    "spec": {"meshConfig": {"extensionProviders": [ISTIO_EXTENSION_PROVIDER]}},
}

_METADATA: Schema = {"name": None, "namespace": None, "labels": {}, "annotations": {}}
_BACKEND_REF: dict[str, Any] = {
    "group": None,
    "kind": None,
    "name": None,
    "namespace": None,
    "port": None,
    "weight": None,
}
# gateway.networking.k8s.io/v1 HTTPRoute, Gateway API 1.2 (the fields a route like ours
# uses; filters, timeouts and the rest are left out on purpose)
HTTP_ROUTE: Schema = {
    "apiVersion": None,
    "kind": None,
    "metadata": _METADATA,
    "spec": {
        "parentRefs": [
            {
                "group": None,
                "kind": None,
                "name": None,
                "namespace": None,
                "sectionName": None,
                "port": None,
            }
        ],
        "hostnames": [None],
        "rules": [
            {
                "name": None,
                "matches": [
                    {
                        "path": {"type": None, "value": None},
                        "headers": [{"type": None, "name": None, "value": None}],
                        "queryParams": [{"type": None, "name": None, "value": None}],
                        "method": None,
                    }
                ],
                "backendRefs": [_BACKEND_REF],
            }
        ],
    },
}
# gateway.envoyproxy.io/v1alpha1 SecurityPolicy, Envoy Gateway 1.3: targetRefs and extAuth
SECURITY_POLICY: Schema = {
    "apiVersion": None,
    "kind": None,
    "metadata": _METADATA,
    "spec": {
        "targetRefs": [{"group": None, "kind": None, "name": None, "sectionName": None}],
        "extAuth": {
            "grpc": {"backendRefs": [{**_BACKEND_REF, "fallback": None}]},
            "http": {
                "backendRefs": [{**_BACKEND_REF, "fallback": None}],
                "path": None,
                "headersToBackend": [None],
            },
            "headersToExtAuth": [None],
            "bodyToExtAuth": {"maxRequestBytes": None},
            "failOpen": None,
            "recomputeRoute": None,
        },
    },
}
# gateway.networking.k8s.io/v1beta1 ReferenceGrant, Gateway API 1.2
REFERENCE_GRANT: Schema = {
    "apiVersion": None,
    "kind": None,
    "metadata": _METADATA,
    "spec": {
        "from": [{"group": None, "kind": None, "namespace": None}],
        "to": [{"group": None, "kind": None, "name": None}],
    },
}
GATEWAY_KINDS = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTP_ROUTE,
    ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"): SECURITY_POLICY,
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"): REFERENCE_GRANT,
}


def unknown_fields(value: Any, schema: Schema, where: str = "") -> Iterator[str]:
    """Paths of the fields in `value` that `schema` does not name."""
    if schema is None:
        return
    if isinstance(schema, list):
        assert isinstance(value, list), f"{where}: expected a list"
        for index, item in enumerate(value):
            yield from unknown_fields(item, schema[0], f"{where}[{index}]")
        return
    assert isinstance(value, dict), f"{where}: expected a mapping"
    if not schema:  # a free map (labels, additional headers)
        return
    for key, item in value.items():
        if key not in schema:
            yield f"{where}.{key}".lstrip(".")
        else:
            yield from unknown_fields(item, schema[key], f"{where}.{key}")


def documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert docs, path
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


SERVICE_DOCS = documents(SERVICE)
[SERVICE_OBJECT] = by_kind(SERVICE_DOCS, "Service")
[DEPLOYMENT] = by_kind(SERVICE_DOCS, "Deployment")
[CONTAINER] = DEPLOYMENT["spec"]["template"]["spec"]["containers"]
SERVICE_HOST = (
    f"{SERVICE_OBJECT['metadata']['name']}.{SERVICE_OBJECT['metadata']['namespace']}"
    ".svc.cluster.local"
)
SERVICE_PORTS = {p["port"]: p for p in SERVICE_OBJECT["spec"]["ports"]}
[MESH] = documents(MESH_CONFIG)
PROVIDERS = {p["name"]: p for p in MESH["spec"]["meshConfig"]["extensionProviders"]}


def test_the_schema_walk_reports_unknown_fields() -> None:
    route = {"apiVersion": "x", "kind": "HTTPRoute", "spec": {"rules": [{"matchs": []}]}}
    assert list(unknown_fields(route, HTTP_ROUTE)) == ["spec.rules[0].matchs"]
    assert list(unknown_fields({"metadata": {"labels": {"any": "x"}}}, HTTP_ROUTE)) == []


# --- the shared ext-authz service ---------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_service_manifests_are_valid_kubernetes(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for document in SERVICE_DOCS:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_service_policy_loads(tmp_path: Path) -> None:
    [config] = by_kind(SERVICE_DOCS, "ConfigMap")
    policy = tmp_path / "policy.yaml"
    policy.write_text(config["data"]["policy.yaml"], encoding="utf-8")
    loaded = load_policy(policy)
    assert {route.name for route in loaded.routes} >= {"read-orders", "everything-else"}


def test_the_service_ports_are_the_containers() -> None:
    declared = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    for port in SERVICE_OBJECT["spec"]["ports"]:
        assert declared[port["targetPort"]] == port["port"]
    args = CONTAINER["args"]
    assert args[args.index("--listen") + 1] == f"0.0.0.0:{GRPC_PORT}"
    assert SERVICE_PORTS[GRPC_PORT]["appProtocol"] == "grpc"
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert SERVICE_OBJECT["spec"]["selector"].items() <= labels.items()
    assert CONTAINER["readinessProbe"]["grpc"]["port"] == GRPC_PORT
    assert CONTAINER["securityContext"]["readOnlyRootFilesystem"] is True


# --- Istio -----------------------------------------------------------------------------


def test_the_mesh_config_names_only_extension_provider_fields() -> None:
    assert MESH["apiVersion"] == "install.istio.io/v1alpha1"
    assert MESH["kind"] == "IstioOperator"
    assert list(unknown_fields(MESH, ISTIO_OPERATOR)) == []


def test_the_grpc_provider_is_our_grpc_port_and_fails_closed() -> None:
    grpc = PROVIDERS["ext-authz-grpc"]["envoyExtAuthzGrpc"]
    assert grpc["service"] == SERVICE_HOST
    assert grpc["port"] == GRPC_PORT and GRPC_PORT in SERVICE_PORTS
    assert grpc["failOpen"] is False
    assert grpc["statusOnError"] == "503"
    assert re.fullmatch(r"\d+(\.\d+)?s", grpc["timeout"])


def test_the_http_provider_is_the_http_door() -> None:
    http = PROVIDERS["ext-authz-http"]["envoyExtAuthzHttp"]
    assert http["service"] == SERVICE_HOST
    assert (http["port"], http["pathPrefix"]) == (HTTP_DOOR_PORT, HTTP_DOOR_PREFIX)
    assert http["failOpen"] is False
    assert "authorization" in http["includeRequestHeadersInCheck"]
    # the identity headers the policy maps must come back to the upstream
    [config] = by_kind(SERVICE_DOCS, "ConfigMap")
    mapped = set(re.findall(r"\b(x-[a-z-]+):", config["data"]["policy.yaml"]))
    assert mapped <= set(http["headersToUpstreamOnAllow"])
    assert "www-authenticate" in http["headersToDownstreamOnDeny"]


def test_the_authorization_policy_is_a_published_istio_v1_object() -> None:
    [document] = documents(ISTIO_POLICY)
    model = AuthorizationPolicy.model_validate(document)
    # unknown fields are dropped by the model: the round trip must give the file back
    assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) == document
    assert document["apiVersion"] == "security.istio.io/v1"
    spec = document["spec"]
    assert spec["action"] == "CUSTOM"
    assert spec["provider"]["name"] in PROVIDERS
    assert spec["rules"], "a CUSTOM policy without rules would send nothing to ext-authz"


def test_an_unknown_authorization_policy_field_is_caught() -> None:
    [document] = documents(ISTIO_POLICY)
    document["spec"]["actions"] = document["spec"].pop("action")
    model = AuthorizationPolicy.model_validate(document)
    assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) != document


# --- Envoy Gateway ---------------------------------------------------------------------


GATEWAY_DOCS = documents(GATEWAY)


def test_the_gateway_manifests_name_only_published_fields() -> None:
    for document in GATEWAY_DOCS:
        schema = GATEWAY_KINDS[(document["apiVersion"], document["kind"])]
        assert list(unknown_fields(document, schema)) == [], document["kind"]


def test_the_security_policy_targets_the_route_and_calls_our_grpc_port() -> None:
    [route] = by_kind(GATEWAY_DOCS, "HTTPRoute")
    [policy] = by_kind(GATEWAY_DOCS, "SecurityPolicy")
    [grant] = by_kind(GATEWAY_DOCS, "ReferenceGrant")
    assert policy["metadata"]["namespace"] == route["metadata"]["namespace"]
    assert policy["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "orders-api"}
    ]
    assert route["metadata"]["name"] == "orders-api"
    ext_auth = policy["spec"]["extAuth"]
    assert ext_auth["failOpen"] is False
    assert "http" not in ext_auth
    [backend] = ext_auth["grpc"]["backendRefs"]
    assert backend["name"] == SERVICE_OBJECT["metadata"]["name"]
    assert backend["namespace"] == SERVICE_OBJECT["metadata"]["namespace"]
    assert backend["port"] == GRPC_PORT
    # the cross-namespace reference is allowed by the Service's namespace
    assert grant["metadata"]["namespace"] == backend["namespace"]
    assert {
        "group": "gateway.envoyproxy.io",
        "kind": "SecurityPolicy",
        "namespace": policy["metadata"]["namespace"],
    } in grant["spec"]["from"]
    assert {"group": "", "kind": "Service", "name": backend["name"]} in grant["spec"]["to"]
    # the route's host is one the policy's routes match
    [config] = by_kind(SERVICE_DOCS, "ConfigMap")
    assert all(host in config["data"]["policy.yaml"] for host in route["spec"]["hostnames"])


def test_the_deployment_doc_names_the_api_versions_and_files() -> None:
    text = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    for needle in (
        "deploy/istio/mesh-config.yaml",
        "deploy/istio/authorization-policy.yaml",
        "deploy/envoy-gateway/security-policy.yaml",
        "deploy/ext-authz-service/ext-authz.yaml",
        "Istio 1.24",
        "Envoy Gateway 1.3",
        "Gateway API 1.2",
        "envoyExtAuthzHttp",
        "context_extensions",
    ):
        assert needle in text, needle
