"""Send CheckRequests shaped like Envoy's straight to a running server over gRPC."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc


def check_request(
    path: str, token: str | None = None, method: str = "GET", host: str = "api.test", **headers: str
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = method, path, host
    for name, value in headers.items():
        http.headers[name.replace("_", "-")] = value
    if token is not None:
        http.headers["authorization"] = f"Bearer {token}"
    return request


@dataclass(frozen=True)
class Verdict:
    status: int  # the HTTP status Envoy would use
    headers: dict[str, str]
    remove: tuple[str, ...]


def verdict(response: external_auth_pb2.CheckResponse) -> Verdict:
    if response.HasField("denied_response"):
        denied = response.denied_response
        headers = {h.header.key: h.header.value for h in denied.headers}
        return Verdict(int(denied.status.code), headers, ())
    ok = response.ok_response
    return Verdict(
        200, {h.header.key: h.header.value for h in ok.headers}, tuple(ok.headers_to_remove)
    )


class CheckClient:
    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        if credentials is None:
            self.channel = grpc.insecure_channel(target)
        else:
            self.channel = grpc.secure_channel(
                target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
            )
        self.stub = external_auth_pb2_grpc.AuthorizationStub(self.channel)

    def check(self, path: str, token: str | None = None, **kwargs: str) -> Verdict:
        return verdict(self.stub.Check(check_request(path, token, **kwargs), timeout=10))

    def close(self) -> None:
        self.channel.close()
