"""OpenTelemetry traces, exported over OTLP/HTTP to a real receiver that decodes them with
the `opentelemetry-proto` messages.

The end-to-end test sends a request with a `traceparent` through a real Envoy to the
server (a subprocess with `--otlp-endpoint`) and finds the check's span under the trace
id it sent. The others run the server's pieces in this process, against the same
receiver, for B3, sampling, child spans and what attributes may hold.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ext_authz import tracing
from ext_authz.authorizer import Authorizer, Runtime
from ext_authz.demo.upstream import serve_upstream
from ext_authz.deploy.envoy_config import EnvoyParams
from ext_authz.envoy.server import build_server
from ext_authz.keys.jwks import parse_jwks
from ext_authz.policy.loader import compile_policy_text
from ext_authz.request import RequestView
from tests.support import tokens
from tests.support.checks import RecordingKeys
from tests.support.doubles import FixedClock
from tests.support.grpc_check import CheckClient
from tests.support.jwe_tokens import RSA_ENC, decryption_yaml, encrypt_nested
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.processes import free_port, running, start_envoy, wait_for_grpc_serving
from tests.support.tokens import CORP, NOW, mint, mint_live, policy_yaml, rsa_key

START = 30.0
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
STATUS_ERROR = 2
ROTATED = tokens.TestIssuer("corp", CORP.iss, "RS256", "corp-rotated", rsa_key())  # corp's next key


def _ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def _checks(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id and s.name == tracing.SPAN_NAME]


def _no_secrets(spans: list[ReceivedSpan], *secrets_: str) -> None:
    for span in spans:
        for value in span.attributes.values():
            for secret in secrets_:
                assert secret not in str(value), (span.name, value)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running_receiver:
        yield running_receiver


# --- through a real Envoy ---------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_the_check_span_continues_the_trace_envoy_sent(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(CORP), encoding="utf-8")
    port = free_port()
    cmd = [sys.executable, "-m", "ext_authz", "serve", "--config", str(policy)]
    cmd += ["--listen", f"127.0.0.1:{port}", "--shutdown-delay", "0", "--grace", "2"]
    cmd += ["--otlp-endpoint", receiver.endpoint]
    env = {**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_EXPORTER_")}
    upstream = serve_upstream("127.0.0.1", 0)
    try:
        with running(cmd, name="ext-authz", env=env) as server:
            assert wait_for_grpc_serving("127.0.0.1", port, START, server)
            params = EnvoyParams(
                listen_port=free_port(),
                admin_port=free_port(),
                ext_authz_port=port,
                upstream_port=upstream.server_address[1],
            )
            allowed_trace, allowed_parent = _ids()
            denied_trace, denied_parent = _ids()
            token = mint_live(CORP, sub="alice-secret-subject")
            with (
                start_envoy(params, tmp_path) as envoy,
                httpx.Client(trust_env=False, timeout=10) as client,
            ):
                allowed = client.get(
                    envoy.url("/api/orders"),
                    headers={
                        "authorization": f"Bearer {token}",
                        "traceparent": f"00-{allowed_trace}-{allowed_parent}-01",
                    },
                )
                denied = client.get(
                    envoy.url("/api/orders"),
                    headers={"traceparent": f"00-{denied_trace}-{denied_parent}-01"},
                )
            assert allowed.status_code == 200
            assert denied.status_code == 401
            spans = receiver.wait_for(
                lambda got: bool(_checks(got, allowed_trace) and _checks(got, denied_trace))
            )
    finally:
        upstream.shutdown()
        upstream.server_close()
    assert not receiver.bad_requests
    [span] = _checks(spans, allowed_trace)
    assert span.parent_span_id == allowed_parent  # Envoy forwarded the caller's context
    assert span.kind == SERVER_KIND
    assert span.service_name == "ext-authz"
    assert span.attributes["ext_authz.route"] == "read-orders"
    assert span.attributes["ext_authz.issuer"] == "corp"
    assert span.attributes["ext_authz.result"] == "allow"
    assert "ext_authz.reason" not in span.attributes
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["ext_authz.decision_id"]  # Envoy's x-request-id
    [deny] = _checks(spans, denied_trace)
    assert deny.parent_span_id == denied_parent
    assert deny.attributes["ext_authz.result"] == "deny"
    assert deny.attributes["ext_authz.reason"] == "token_missing"
    assert deny.status_code != STATUS_ERROR  # a denial is an answer, not a failure
    _no_secrets(spans, *token.split("."), "alice-secret-subject", "/api/orders")


# --- in this process ----------------------------------------------------------------


@pytest.fixture
def tracer(receiver: OtlpReceiver) -> Iterator[tracing.CheckTracer]:
    started = tracing.start_tracing(receiver.endpoint, export_delay_ms=50)
    assert started is not None
    try:
        yield started
    finally:
        tracing.stop_tracing(started)


def test_b3_headers_continue_a_zipkin_trace_and_unsampled_calls_record_nothing(
    receiver: OtlpReceiver, tracer: tracing.CheckTracer
) -> None:
    policy = compile_policy_text(policy_yaml(CORP), label="policy.yaml", base_dir=Path("."))
    authorizer = Authorizer(lambda: policy, RecordingKeys.of(policy), FixedClock(NOW))
    server, _health, port = build_server(authorizer, "127.0.0.1:0", tracer=tracer)
    server.start()
    single_trace, single_parent = _ids()
    multi_trace, multi_parent = _ids()
    off_trace, off_parent = _ids()
    both_trace, both_parent = _ids()
    client = CheckClient(f"127.0.0.1:{port}")
    try:
        assert client.check("/api/orders", mint(CORP), b3=f"{single_trace}-{single_parent}-1")
        client.check(
            "/api/orders",
            mint(CORP, scope="profile"),
            x_b3_traceid=multi_trace,
            x_b3_spanid=multi_parent,
            x_b3_sampled="1",
        )
        client.check("/api/orders", traceparent=f"00-{off_trace}-{off_parent}-00")
        # a malformed context is ignored: the check is answered and starts its own trace
        assert client.check("/healthz", traceparent="00-zz-not-a-context", b3="x-y-z").status
        # traceparent wins over B3 when a request carries both
        client.check(
            "/internal",
            traceparent=f"00-{both_trace}-{both_parent}-01",
            b3=f"{single_trace}-{single_parent}-1",
        )
    finally:
        client.close()
        server.stop(0).wait()
    tracing.stop_tracing(tracer)  # flushes
    spans = receiver.spans
    [single] = _checks(spans, single_trace)
    assert single.parent_span_id == single_parent
    assert single.attributes["ext_authz.result"] == "allow"
    [multi] = _checks(spans, multi_trace)
    assert multi.parent_span_id == multi_parent
    assert multi.attributes["ext_authz.reason"] == "scope_missing"
    assert multi.attributes["ext_authz.issuer"] == "corp"
    assert _checks(spans, off_trace) == []
    [both] = _checks(spans, both_trace)
    assert both.parent_span_id == both_parent
    assert both.attributes["ext_authz.route"] == "everything-else"
    assert both.attributes["ext_authz.reason"] == "route_deny"
    assert len(_checks(spans, single_trace)) == 1
    [malformed] = [s for s in spans if s.attributes.get("ext_authz.route") == "health"]
    assert malformed.parent_span_id == ""


def test_a_check_without_trace_headers_starts_a_trace(
    receiver: OtlpReceiver, tracer: tracing.CheckTracer
) -> None:
    policy = compile_policy_text(policy_yaml(CORP), label="policy.yaml", base_dir=Path("."))
    authorizer = Authorizer(lambda: policy, RecordingKeys.of(policy), FixedClock(NOW))
    view = RequestView("GET", "/healthz", "api.test", {})
    tracer.check(authorizer.check, view, {})
    tracing.stop_tracing(tracer)
    [span] = [s for s in receiver.spans if s.name == tracing.SPAN_NAME]
    assert span.parent_span_id == ""
    assert span.attributes["ext_authz.route"] == "health"


def test_a_key_refetch_and_a_decryption_are_child_spans_of_the_check(
    receiver: OtlpReceiver, tracer: tracing.CheckTracer
) -> None:
    remote_corp = "\n".join(
        [
            "  corp:",
            f"    issuer: {CORP.iss}",
            "    audiences: [orders-api]",
            "    algorithms: [RS256]",
            "    jwks_uri: http://127.0.0.1:9/jwks.json",  # never fetched: keys come from below
        ]
    )
    policy = compile_policy_text(
        policy_yaml(extra_issuers=remote_corp) + decryption_yaml(keys=[RSA_ENC]),
        label="policy.yaml",
        base_dir=Path("."),
    )
    rotated = {"keys": CORP.jwks()["keys"] + ROTATED.jwks()["keys"]}
    keys = RecordingKeys(
        {"corp": parse_jwks(CORP.jwks()).key_set},
        after_refetch={"corp": parse_jwks(rotated).key_set},
    )
    authorizer = Authorizer.over(
        tracer.traced_runtime(lambda: Runtime(policy, keys)), FixedClock(NOW)
    )
    signed = mint(ROTATED)
    token = encrypt_nested(signed, RSA_ENC.public_jwk(), "RSA-OAEP-256", "A256GCM")
    trace_id, parent = _ids()
    view = RequestView(
        "GET", "/api/orders", "api.test", {"authorization": f"Bearer {token}"}, request_id="r-1"
    )
    decision = tracer.check(authorizer.check, view, {"traceparent": f"00-{trace_id}-{parent}-01"})
    assert decision.route == "read-orders"
    assert ("refetch", "corp") in keys.calls
    tracing.stop_tracing(tracer)
    spans = [s for s in receiver.spans if s.trace_id == trace_id]
    [check] = _checks(spans, trace_id)
    assert check.attributes["ext_authz.result"] == "allow"
    children = {s.name: s for s in spans if s.parent_span_id == check.span_id}
    assert set(children) == {"ext_authz.token.decrypt", "ext_authz.keys.refetch"}
    refetch = children["ext_authz.keys.refetch"]
    assert refetch.attributes == {
        "ext_authz.issuer": "corp",
        "ext_authz.keys.refetch.result": "fresh",
    }
    _no_secrets(spans, *token.split("."), *signed.split("."))


# --- switching it on and off --------------------------------------------------------


def test_tracing_is_off_unless_asked_for() -> None:
    assert not tracing.tracing_requested(None, {})
    assert tracing.tracing_requested("http://127.0.0.1:4318", {})
    assert tracing.tracing_requested(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert tracing.tracing_requested(None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c"})
    assert not tracing.tracing_requested("http://127.0.0.1:4318", {"OTEL_SDK_DISABLED": "true"})


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
        ("https://collector.example/otlp", "https://collector.example/otlp/v1/traces"),
        ("http://127.0.0.1:4318/v1/traces", "http://127.0.0.1:4318/v1/traces"),
    ],
)
def test_the_endpoint_is_the_otlp_base_url(endpoint: str, url: str) -> None:
    assert tracing.traces_url(endpoint) == url


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4318", "grpc://127.0.0.1:4317", "http://"])
def test_an_endpoint_that_is_not_an_http_url_is_refused(endpoint: str) -> None:
    with pytest.raises(tracing.TracingError, match="http"):
        tracing.traces_url(endpoint)


@pytest.mark.slow
def test_serve_refuses_to_start_with_a_bad_endpoint(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(CORP), encoding="utf-8")
    cmd = [sys.executable, "-m", "ext_authz", "serve", "--config", str(policy)]
    cmd += ["--listen", f"127.0.0.1:{free_port()}", "--otlp-endpoint", "collector:4318"]
    with running(cmd, name="ext-authz") as server:
        assert server.proc.wait(20) == 1
        assert "--otlp-endpoint must be an http(s) URL" in server.stderr_text()


def test_with_tracing_off_nothing_is_set_up() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if env != dict(os.environ):
        pytest.skip("OTEL_* variables are set in this environment")
    assert tracing.start_tracing(None) is None
    assert tracing._active is None
    assert tracing.phase("token.decrypt") is tracing._NO_SPAN


@pytest.mark.slow
def test_a_collector_that_is_down_costs_spans_never_checks_or_a_slow_exit() -> None:
    policy = compile_policy_text(policy_yaml(CORP), label="policy.yaml", base_dir=Path("."))
    authorizer = Authorizer(lambda: policy, RecordingKeys.of(policy), FixedClock(NOW))
    view = RequestView("GET", "/api/orders", "api.test", {"authorization": f"Bearer {mint(CORP)}"})
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = tracing.start_tracing(down, export_delay_ms=20)
    assert started is not None
    try:
        for _ in range(300):
            assert started.check(authorizer.check, view, {}).route == "read-orders"
        time.sleep(0.3)  # the exporter is failing and retrying meanwhile
        began = time.monotonic()
        for _ in range(300):
            assert started.check(authorizer.check, view, {}).route == "read-orders"
        assert time.monotonic() - began < 5.0
    finally:
        began = time.monotonic()
        tracing.stop_tracing(started)
        assert time.monotonic() - began < tracing.FLUSH_SECONDS + 3.0


# --- the HTTP door -----------------------------------------------------------------


def test_the_http_door_continues_the_callers_trace(
    receiver: OtlpReceiver, tracer: tracing.CheckTracer
) -> None:
    from ext_authz.http.server import build_http_door

    policy = compile_policy_text(policy_yaml(CORP), label="policy.yaml", base_dir=Path("."))
    runtime = Runtime(policy, RecordingKeys.of(policy))
    door, port = build_http_door(
        "127.0.0.1:0", lambda: runtime, clock=FixedClock(NOW), observers=[], tracer=tracer
    )
    door.start()
    trace_id, parent = _ids()
    token = mint(CORP)
    try:
        answer = httpx.get(
            f"http://127.0.0.1:{port}/forward-auth",
            headers={
                "x-forwarded-method": "GET",
                "x-forwarded-proto": "https",
                "x-forwarded-host": "api.test",
                "x-forwarded-uri": "/api/orders",
                "authorization": f"Bearer {token}",
                "traceparent": f"00-{trace_id}-{parent}-01",
            },
            trust_env=False,
            timeout=5,
        )
    finally:
        door.stop(0)
    assert answer.status_code == 200
    tracing.stop_tracing(tracer)  # flushes
    [span] = _checks(receiver.spans, trace_id)
    assert span.parent_span_id == parent
    assert span.kind == SERVER_KIND
    assert span.attributes["ext_authz.result"] == "allow"
    assert span.attributes["ext_authz.issuer"] == "corp"
    _no_secrets(receiver.spans, token)


def test_a_shadowed_protobuf_module_is_named_with_its_fix() -> None:
    shadowed = tracing.missing_sdk_message("opentelemetry.proto.common.v1.common_pb2")
    assert "xds-protos" in shadowed
    assert "--force-reinstall --no-deps opentelemetry-proto" in shadowed
    missing = tracing.missing_sdk_message("opentelemetry.sdk")
    assert "pip install 'ext-authz[otel]'" in missing
