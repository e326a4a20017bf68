"""A loopback OTLP/HTTP receiver for the tracing cost rows: it accepts each export
(`POST /v1/traces`), answers as a collector does and counts what arrived, so the traced
servers pay the full export path (serialisation, HTTP) without a collector installed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.procs import LOOPBACK


class OtlpSink:
    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with sink._lock:
                    sink.exports += 1
                    sink.bytes += len(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.httpd.server_address[1]}"

    def summary(self) -> dict[str, int]:
        with self._lock:
            return {"exports": self.exports, "bytes": self.bytes}


@contextmanager
def otlp_sink() -> Iterator[OtlpSink]:
    sink = OtlpSink()
    sink.thread.start()
    try:
        yield sink
    finally:
        sink.httpd.shutdown()
        sink.httpd.server_close()
