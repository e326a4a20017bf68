"""The decision log: one structured line per decision, shared by both front doors."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from ext_authz.decision import Allow, Decision, outcome
from ext_authz.denial import http_status
from ext_authz.log import direct_json_sink, timestamp

decision_log = logging.getLogger("ext_authz.decision")

DecisionObserver = Callable[[Decision, str, float], None]

MAX_REQUEST_ID = 128
# RFC 9110 token characters: a client's id is logged as the decision id only when it
# is short and plain; anything else (long, spaces, quotes, control bytes) is replaced.
_REQUEST_ID = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1," + str(MAX_REQUEST_ID) + "}")


def decision_id(request_id: str | None) -> str:
    """The id a decision is logged under: the request's `x-request-id` when it is a
    short token, else a fresh random one."""
    if request_id is not None and _REQUEST_ID.fullmatch(request_id):
        return request_id
    return uuid.uuid4().hex


def log_decision(decision: Decision, decision_id: str, seconds: float) -> None:
    sink = direct_json_sink(decision_log)
    if sink is None and not decision_log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "decision_id": decision_id,
        "route": decision.route,
        "issuer": decision.issuer,
        "latency_ms": round(seconds * 1000, 3),
    }
    if decision.log_subject and decision.subject is not None:
        fields["subject"] = decision.subject
    result, why = outcome(decision)
    fields["result"] = result
    fields["status"] = 200 if isinstance(decision, Allow) else http_status(decision)
    if why is not None:
        fields["reason"] = why.value
    if isinstance(decision, Allow):
        if decision.notes:
            fields["header_notes"] = list(decision.notes)
    elif decision.detail:
        fields["detail"] = decision.detail
    if sink is not None:  # the same JSON line the formatter would write, built directly
        now = time.time()
        line = {"ts": timestamp(now), "level": "info", "logger": decision_log.name}
        line["msg"] = "decision"
        sink.write_line(json.dumps({**line, **fields}, default=str, separators=(",", ":")))
        return
    decision_log.info("decision", extra=fields)
