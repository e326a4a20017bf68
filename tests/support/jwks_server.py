"""A real loopback HTTP server for key sets that tests can break on purpose.

It serves `/jwks.json` and `/.well-known/openid-configuration`, counts requests,
and can answer with an error status, garbage, a delay, a reset connection, or a
rotated key set.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class JwksBehaviour:
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    status: int = 200
    body: bytes | None = None  # served instead of the JWKS when set
    delay: float = 0.0
    cache_control: str | None = "max-age=300"
    issuer: str | None = None  # for discovery; defaults to the base URL
    reset: bool = False  # drop the connection without an answer
    requests: dict[str, int] = field(default_factory=dict)


class JwksServer:
    def __init__(self) -> None:
        self.behaviour = JwksBehaviour()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.base_url}/jwks.json"

    def count(self, path: str = "/jwks.json") -> int:
        with self.lock:
            return self.behaviour.requests.get(path, 0)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        b = self.behaviour
        with self.lock:
            b.requests[handler.path] = b.requests.get(handler.path, 0) + 1
        if b.delay:
            time.sleep(b.delay)
        if b.reset:
            handler.close_connection = True
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            handler.connection.close()
            return
        if handler.path == "/.well-known/openid-configuration":
            body = json.dumps(
                {"issuer": b.issuer or self.base_url, "jwks_uri": self.jwks_uri}
            ).encode()
            status = 200
        elif handler.path == "/jwks.json":
            body = b.body if b.body is not None else json.dumps(b.jwks).encode()
            status = b.status
        else:
            body, status = b"{}", 404
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(body)))
            if b.cache_control:
                handler.send_header("cache-control", b.cache_control)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextmanager
def jwks_server(jwks: dict[str, Any] | None = None) -> Iterator[JwksServer]:
    server = JwksServer()
    if jwks is not None:
        server.behaviour.jwks = jwks
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
