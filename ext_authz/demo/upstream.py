"""An echo upstream: answers every request with the method, path and headers it received.

It stands in for the protected service, so the demo and the end-to-end tests can see
exactly which headers Envoy forwarded after the ext_authz decision.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

_log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9200"
_MAX_BODY = 16 * 1024 * 1024
_CHUNK = 64 * 1024


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that never writes per-request or per-error lines to stderr."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        _log.debug("error while serving %s", client_address, exc_info=True)


class BadRequestBodyError(Exception):
    pass


def _drain_body(handler: BaseHTTPRequestHandler) -> None:
    """Read and discard the request body so the connection can be reused."""
    encoding = handler.headers.get("Transfer-Encoding", "")
    if "chunked" in encoding.lower():
        total = 0
        while True:
            line = handler.rfile.readline(1024)
            if not line:
                raise BadRequestBodyError("truncated chunked body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequestBodyError("bad chunk size") from None
            if size == 0:
                while handler.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            total += size
            if total > _MAX_BODY:
                raise BadRequestBodyError("body too large")
            _read_exactly(handler, size + 2)
    length_text = handler.headers.get("Content-Length")
    if length_text is None:
        return
    try:
        length = int(length_text)
    except ValueError:
        raise BadRequestBodyError("bad Content-Length") from None
    if length < 0 or length > _MAX_BODY:
        raise BadRequestBodyError("bad Content-Length")
    _read_exactly(handler, length)


def _read_exactly(handler: BaseHTTPRequestHandler, count: int) -> None:
    while count > 0:
        data = handler.rfile.read(min(count, _CHUNK))
        if not data:
            raise BadRequestBodyError("truncated body")
        count -= len(data)


def echo_document(handler: BaseHTTPRequestHandler) -> dict[str, object]:
    """The JSON document the echo upstream answers with."""
    headers: dict[str, str] = {}
    for name, value in handler.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return {"method": handler.command, "path": handler.path, "headers": headers}


class EchoHandler(BaseHTTPRequestHandler):
    """Answers any method on any path with 200 and a JSON echo of the request."""

    protocol_version = "HTTP/1.1"
    server_version = "ext-authz-demo-upstream"
    sys_version = ""

    def __getattr__(self, name: str) -> Callable[[], None]:
        if name.startswith("do_"):
            return self._echo
        raise AttributeError(name)

    def _echo(self) -> None:
        try:
            _drain_body(self)
        except BadRequestBodyError as exc:
            self.close_connection = True
            self._send_json(400, {"error": str(exc)})
            return
        self._send_json(200, echo_document(self))

    def _send_json(self, status: int, document: dict[str, object]) -> None:
        body = json.dumps(document, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        _log.debug("%s - %s %s", self.address_string(), self.command, self.path)


def serve_upstream(host: str, port: int) -> ThreadingHTTPServer:
    """Start the echo upstream on ``host:port`` in a daemon thread and return its server.

    ``port`` may be 0; the bound port is in ``server.server_address[1]``. Stop it with
    ``server.shutdown()`` then ``server.server_close()``.
    """
    server = QuietHTTPServer((host, port), EchoHandler)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name=f"echo-upstream-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return server


def parse_listen(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` allowed) for ``--listen`` options."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port_text)


def wait_for_stop_signal() -> None:
    """Block the main thread until SIGINT or SIGTERM arrives."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ext_authz.demo.upstream",
        description="Echo upstream: answers every request with its method, path and headers.",
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=parse_listen(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"address to listen on (default: {DEFAULT_LISTEN})",
    )
    args = parser.parse_args(argv)
    host, port = args.listen
    try:
        server = serve_upstream(host, port)
    except OSError as exc:
        print(f"echo upstream: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    bound_host, bound_port = server.server_address[:2]
    print(f"echo upstream listening on http://{bound_host!s}:{bound_port}", flush=True)
    try:
        wait_for_stop_signal()
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
