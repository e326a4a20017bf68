"""The request as the pipeline sees it: plain data, no protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RequestView:
    method: str
    path: str  # without the query string
    host: str  # lower-case authority, port included if the client sent one
    headers: Mapping[str, str]  # lower-case names
    context_extensions: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None
