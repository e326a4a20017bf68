"""Structured logging: one JSON object per line (or plain text for humans).

Fields come from `extra=`; nothing here formats tokens, keys or claim values,
and call sites never pass them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

# Fields every line of this process carries (a supervised worker's number).
_static: dict[str, Any] = {}

_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_static)
        entry.update(_extras(record))
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


_PLAIN = re.compile(r"[^\s\"\\=\x00-\x1f\x7f]+")


def _text(value: Any) -> str:
    """A value as `key=value` text: quoted (JSON string escapes) unless plain, so no
    value can end its field or forge another (`x result=allow`)."""
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {**_static, **_extras(record)}
        extras = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None)
        line = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if extras:
            line += f" {extras}"
        if record.exc_info and record.exc_info[0] is not None:
            line += "\n" + self.formatException(record.exc_info)
        return line


class BufferedStderrHandler(logging.Handler):
    """Formats outside any lock and writes lines in batches: a check thread appends
    one string (or, with `defer`, a formatter and its arguments, formatted by the
    writer), and a background thread writes what has gathered every `interval`
    seconds (or sooner, past `batch` lines). Pending lines are written on flush and at
    exit (logging's own shutdown flushes every handler)."""

    def __init__(self, interval: float = 0.2, batch: int = 512, shared: bool = False) -> None:
        super().__init__()
        self._shared = shared
        self._pending: list[str | tuple[Callable[..., str], tuple[Any, ...]]] = []
        self._guard = threading.Lock()
        self._batch = batch
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="ext-authz-log", daemon=True
        )
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return False
        with self._guard:
            self._pending.append(line)
            full = len(self._pending) >= self._batch
        if full:
            self._wake.set()
        return True

    def emit(self, record: logging.LogRecord) -> None:  # handle() does the work
        self.handle(record)

    def defer(self, format_line: Callable[..., str], *args: Any) -> None:
        """Queue `format_line(*args)`, called on the writer thread: the caller only
        appends a tuple. The arguments must not change after the call. A closed
        handler (logging reconfigured, or the process ending) takes nothing more."""
        if self._closed:
            return
        with self._guard:
            self._pending.append((format_line, args))
            full = len(self._pending) >= self._batch
        if full:
            self._wake.set()

    def flush(self) -> None:
        with self._guard:
            pending, self._pending = self._pending, []
        lines: list[str] = []
        for item in pending:
            if isinstance(item, str):
                lines.append(item)
                continue
            try:
                lines.append(item[0](*item[1]))
            except Exception:  # a formatting bug must not stop the writer
                lines.append('{"level":"error","msg":"a log line could not be formatted"}')
        if lines and self._shared:
            with contextlib.suppress(OSError):
                write_whole_lines(2, lines)
        elif lines:
            try:
                sys.stderr.write("\n".join(lines) + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()
        super().close()

    def _run(self, interval: float) -> None:
        while not self._closed:
            self._wake.wait(interval)
            self._wake.clear()
            self.flush()


PIPE_BUF = 4096  # POSIX: a pipe write up to this size is never split or interleaved


def share_stderr() -> None:
    """Append to stderr when it is a file, so processes sharing it never write over
    each other's lines (a pipe or terminal needs nothing)."""
    with contextlib.suppress(OSError):
        flags = fcntl.fcntl(2, fcntl.F_GETFL)
        fcntl.fcntl(2, fcntl.F_SETFL, flags | os.O_APPEND)


def write_whole_lines(fd: int, lines: list[str]) -> None:
    """Write `lines` in writes of whole lines of at most `PIPE_BUF` bytes (a longer
    line alone), so lines of processes writing to one pipe never interleave."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode("utf-8", "replace") + b"\n"
        if chunk and size + len(data) > PIPE_BUF:
            _write_all(fd, b"".join(chunk))
            chunk, size = [], 0
        chunk.append(data)
        size += len(data)
    if chunk:
        _write_all(fd, b"".join(chunk))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


_direct: BufferedStderrHandler | None = None


def direct_json_sink(logger: logging.Logger) -> BufferedStderrHandler | None:
    """The buffered JSON handler when it is the only place `logger`'s INFO lines go, so
    a hot path may hand it a ready JSON line instead of building a `LogRecord` (which
    walks the stack to find its caller). None whenever anything else listens (tests)."""
    sink = _direct
    if sink is None or logger.handlers:
        return None
    handlers = _root.handlers
    if len(handlers) != 1 or handlers[0] is not sink:
        return None
    return sink if logger.isEnabledFor(logging.INFO) else None


_root = logging.getLogger()
_second: tuple[int, str] = (-1, "")


def timestamp(now: float) -> str:
    """RFC 3339 UTC with milliseconds; the part up to the second is computed once a
    second (the decision log writes thousands of lines a second)."""
    global _second
    whole = int(now)
    second = _second
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{int(now % 1 * 1000):03d}Z"


_settings = ("json", "info")


def add_static_fields(**fields: Any) -> None:
    """Fields to put on every line this process logs from now on."""
    _static.update(fields)


def static_fields() -> dict[str, Any]:
    return _static


def current_settings() -> tuple[str, str]:
    """The format and level `configure` was last given (for worker processes)."""
    return _settings


def configure(
    fmt: str = "json", level: str = "info", buffered: bool = False, shared: bool = False
) -> None:
    """Log to stderr. `buffered` batches writes (the server: one decision line per
    check); commands that print a few lines write them at once. `shared`: other
    processes write to the same stderr (workers of `--processes N`)."""
    global _settings
    _settings = (fmt, level)
    if shared:
        share_stderr()
    handler: logging.Handler = (
        BufferedStderrHandler(shared=shared) if buffered else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    global _direct
    _direct = handler if isinstance(handler, BufferedStderrHandler) and fmt == "json" else None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
