"""OpenTelemetry traces: one span per check, continuing the trace of the request.

Off unless `--otlp-endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables are given; then a `CheckTracer` wraps
each check. The front doors hold `CheckTracer | None`, so with tracing off a check
pays one `None` test and nothing is imported. The OpenTelemetry SDK and its OTLP/HTTP
exporter come with the `otel` extra (`pip install 'ext-authz[otel]'`).

A span carries the route, issuer, result and reason of the decision, the request
method and the decision id: never the token, a claim value or the path. A key refetch
the check waited for is a child span (`ext_authz.keys.refetch`); so is decryption
(`ext_authz.token.decrypt`, through `phase()`). Spans leave on the SDK's batch
processor thread, never on the check thread.

The parent context is read from the request headers, W3C `traceparent`/`tracestate`
first and B3 (single `b3` or `x-b3-*`) otherwise, so any front door can call
`CheckTracer.check` with the headers it received.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ext_authz.decision import Allow, Decision, outcome
from ext_authz.denial import http_status
from ext_authz.keys.store import IssuerKeys, KeyProvider
from ext_authz.request import RequestView

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from ext_authz.authorizer import Runtime

TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACES_PATH = "/v1/traces"
SPAN_NAME = "ext_authz.check"
FLUSH_SECONDS = 2.0  # what stopping may spend exporting the last spans
INSTRUMENTATION = "ext_authz"

log = logging.getLogger("ext_authz.tracing")


def missing_sdk_message(module: str | None) -> str:
    """Why tracing cannot start when importing the SDK failed on `module`."""
    if module is not None and module.startswith("opentelemetry.proto."):
        # xds-protos ships its own opentelemetry/proto/common/v1/common_pb2.py, and the
        # wheel pip installs last wins: the exporter then finds an older message set
        return (
            f"OpenTelemetry's protobuf module {module} is another package's copy "
            "(xds-protos installs one): pip install --force-reinstall --no-deps "
            "opentelemetry-proto"
        )
    return f"tracing needs the OpenTelemetry SDK: pip install 'ext-authz[otel]' ({module})"


class TracingError(Exception):
    """Tracing was asked for and cannot be set up."""


def traces_url(endpoint: str) -> str:
    """`--otlp-endpoint` is the OTLP/HTTP base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT`:
    `/v1/traces` is appended (a URL that already ends with it is kept)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TracingError(f"--otlp-endpoint must be an http(s) URL, got {endpoint!r}")
    if parts.path.rstrip("/").endswith(TRACES_PATH):
        return endpoint
    return endpoint.rstrip("/") + TRACES_PATH


def tracing_requested(endpoint: str | None, environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return endpoint is not None or any(env.get(name) for name in ENDPOINT_VARIABLES)


def envoy_trace_headers(check_request: Any) -> dict[str, str]:
    """The trace headers of an Envoy CheckRequest (lower-case names)."""
    http = check_request.attributes.request.http
    found: dict[str, str] = {}
    if len(http.header_map.headers):
        for entry in http.header_map.headers:
            name = entry.key.lower()
            if name in TRACE_HEADERS:
                found[name] = entry.value or entry.raw_value.decode("utf-8", "replace")
        return found
    source = http.headers
    for name in TRACE_HEADERS:
        value = source.get(name)
        if value is not None:
            found[name] = value
    return found


_Decide = Callable[[RequestView], Decision]


class CheckTracer:
    """The tracer of the checks. Build with `start_tracing`; `shutdown()` flushes."""

    def __init__(self, provider: Any, propagator: Any, exporter: Any = None) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._provider = provider
        self._exporter = exporter
        self._tracer = provider.get_tracer(INSTRUMENTATION)
        self._propagator = propagator
        self._set_in_context = trace.set_span_in_context
        self._server_kind = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)
        self._current = threading.local()

    def check(self, decide: _Decide, view: RequestView, headers: Mapping[str, str]) -> Decision:
        """Run `decide(view)` inside a span whose parent is the trace in `headers`.
        Tracing never changes a decision: if it fails, the check runs untraced."""
        try:
            parent = self._propagator.extract(headers)
            span = self._tracer.start_span(SPAN_NAME, context=parent, kind=self._server_kind)
        except Exception:
            log.exception("could not start the check's span; checking untraced")
            return decide(view)
        local = self._current
        local.span = span
        try:
            decision = decide(view)
        finally:
            local.span = None
        try:
            if span.is_recording():
                self._describe(span, view, decision)
            span.end()
        except Exception:
            log.exception("could not finish the check's span")
        return decision

    def _describe(self, span: Span, view: RequestView, decision: Decision) -> None:
        result, reason = outcome(decision)
        attributes: dict[str, str] = {
            "ext_authz.result": result,
            "http.request.method": view.method,
        }
        if decision.route is not None:
            attributes["ext_authz.route"] = decision.route
        if decision.issuer is not None:
            attributes["ext_authz.issuer"] = decision.issuer
        if reason is not None:
            attributes["ext_authz.reason"] = reason.value
        if view.request_id is not None:
            attributes["ext_authz.decision_id"] = view.request_id
        span.set_attributes(attributes)
        if not isinstance(decision, Allow) and http_status(decision) >= 500:
            span.set_status(self._error)

    @contextlib.contextmanager
    def child(
        self, name: str, attributes: Mapping[str, str] | None = None
    ) -> Iterator[Span | None]:
        """A child span of the check running on this thread (none outside a check)."""
        parent = getattr(self._current, "span", None)
        if parent is None or not parent.is_recording():
            yield None
            return
        span = self._tracer.start_span(
            name, context=self._set_in_context(parent), attributes=attributes
        )
        try:
            yield span
        finally:
            span.end()

    def traced_runtime(self, source: Callable[[], Runtime]) -> Callable[[], Runtime]:
        """`source` with its key provider wrapped so that refetch waits become spans.
        The wrapper is made once per runtime (a reload makes the next one)."""
        from ext_authz.authorizer import Runtime  # the authorizer imports phase() from here

        cached: list[tuple[Runtime, Runtime]] = []

        def current() -> Runtime:
            runtime = source()
            if cached and cached[0][0] is runtime:
                return cached[0][1]
            traced = Runtime(runtime.policy, _TracedKeys(runtime.key_provider, self))
            cached[:] = [(runtime, traced)]
            return traced

        return current

    def shutdown(self, flush_seconds: float = FLUSH_SECONDS) -> None:
        """Export what is queued, for at most `flush_seconds`, and stop the export
        thread. A collector that is down does not hold the process up: the exporter's
        retries stop at the deadline and what is left is dropped."""
        # The SDK's own flush ignores its timeout; stopping the exporter at the deadline
        # ends its retries, and every batch after that fails at once.
        deadline = None
        if self._exporter is not None:
            deadline = threading.Timer(flush_seconds, self._exporter.shutdown)
            deadline.daemon = True
            deadline.start()
        try:
            self._provider.shutdown()
        finally:
            if deadline is not None:
                deadline.cancel()


class _TracedKeys:
    """A key provider whose refetches (the only wait of a check) are child spans."""

    def __init__(self, inner: KeyProvider, tracer: CheckTracer) -> None:
        self._inner = inner
        self._tracer = tracer

    def current(self, issuer: str) -> IssuerKeys:
        return self._inner.current(issuer)

    def refetch(self, issuer: str) -> IssuerKeys | None:
        with self._tracer.child("ext_authz.keys.refetch", {"ext_authz.issuer": issuer}) as span:
            refreshed = self._inner.refetch(issuer)
            if span is not None:
                span.set_attribute(
                    "ext_authz.keys.refetch.result",
                    "cooldown" if refreshed is None else refreshed.status.value,
                )
            return refreshed


# The running tracer, for `phase()`; None while tracing is off.
_active: CheckTracer | None = None


def phase(name: str) -> contextlib.AbstractContextManager[object]:
    """A child span named `ext_authz.<name>` of the check on this thread, when tracing
    is on; a shared no-op context otherwise (one global read)."""
    tracer = _active
    if tracer is None:
        return _NO_SPAN
    return tracer.child(f"ext_authz.{name}")


_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def start_tracing(
    endpoint: str | None,
    *,
    service_name: str = "ext-authz",
    export_delay_ms: int | None = None,
) -> CheckTracer | None:
    """The check tracer, or None when tracing is not asked for. Raises `TracingError`
    when it is asked for and the `otel` extra is missing or the endpoint is invalid.

    Without `endpoint` the exporter reads the standard `OTEL_EXPORTER_OTLP_*`
    variables (endpoint, headers, timeout, certificates); `OTEL_SERVICE_NAME`,
    `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER` apply as usual (the default
    sampler follows the caller's sampled flag)."""
    global _active
    if not tracing_requested(endpoint):
        return None
    url = traces_url(endpoint) if endpoint is not None else None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.propagators.b3 import B3MultiFormat
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError as exc:
        raise TracingError(missing_sdk_message(exc.name)) from None
    resource = Resource.create({SERVICE_NAME: service_name})
    if os.environ.get("OTEL_SERVICE_NAME"):
        resource = Resource.create()  # the variable names the service
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=url)
    if export_delay_ms is None:
        processor = BatchSpanProcessor(exporter)
    else:
        processor = BatchSpanProcessor(exporter, schedule_delay_millis=export_delay_ms)
    provider.add_span_processor(processor)
    # traceparent is read last, so it wins over B3 when a request carries both
    propagator = CompositePropagator([B3MultiFormat(), TraceContextTextMapPropagator()])
    tracer = CheckTracer(provider, propagator, exporter)
    _active = tracer
    return tracer


def stop_tracing(tracer: CheckTracer | None) -> None:
    global _active
    if tracer is None:
        return
    if _active is tracer:
        _active = None
    tracer.shutdown()
