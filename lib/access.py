"""Pure rules of the scoring service's front door: which scope a path needs, rate limits, request bodies.

`ml_assets/service/app.py` applies them; nothing here does IO.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

# No key needed: liveness, and readiness (which says only ready or why not, never internals),
# so the kubelet's probes work without a secret in the pod spec.
OPEN_PATHS = frozenset({"/health", "/ready"})
METRICS_PATHS = frozenset({"/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def required_scope(path: str) -> str | None:
    """The scope a path needs: None for the open ones; any other path (unknown ones included, so that a scan
    without a key learns nothing about what exists) needs a key, and `predict` unless it is a metrics path."""
    if path in OPEN_PATHS:
        return None
    return "metrics" if path in METRICS_PATHS else "predict"


@dataclass
class TokenBucket:
    """`rate` requests per second with bursts of `burst`; `take` says how long to wait when empty (the Retry-After)."""

    rate: float
    burst: int
    tokens: float = field(default=-1.0)
    at: float = 0.0

    def take(self, now: float) -> float:
        """0.0 if the request may go ahead (a token is spent), else the seconds until a token is there."""
        if self.tokens < 0:
            self.tokens, self.at = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def retry_after_header(wait_s: float) -> str:
    """Retry-After takes whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(wait_s)))


class BodyError(ValueError):
    """A request body that is not acceptable JSON; `field` names where (never the value)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _NonFinite(float):
    """NaN or ±Infinity as parsed, kept recognisable so that its place can be named."""

    __slots__ = ("literal",)
    literal: str


def parse_json_body(body: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN or Infinity (Python's json accepts both; they are not JSON).

    Raises BodyError naming the field (`customer_ids[3]`) or `body`; the
    message quotes no input, so a large or hostile body is never echoed.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError("body", f"the body is not UTF-8 (invalid byte at position {exc.start})") from None

    def constant(literal: str) -> _NonFinite:
        value = _NonFinite(literal.replace("Infinity", "inf"))
        value.literal = literal
        return value

    try:
        parsed = json.loads(text, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise BodyError("body", f"the body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise BodyError("body", "the body nests arrays or objects too deeply") from None
    except ValueError:  # an integer literal over Python's 4,300-digit limit
        raise BodyError("body", "the body holds a number too long to read") from None
    where = _find_non_finite(parsed, "")
    if where is not None:
        path, literal = where
        raise BodyError(path or "body", f"{path or 'the body'} is {literal}, which JSON does not allow")
    return parsed


def _find_non_finite(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, _NonFinite):
        return path, value.literal
    if isinstance(value, float) and not math.isfinite(value):
        return path, "a number too large for a float (read as infinity)"
    if isinstance(value, dict):
        for k, v in value.items():
            name = str(k)[:64]
            found = _find_non_finite(v, f"{path}.{name}" if path else name)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_non_finite(v, f"{path}[{i}]")
            if found:
                return found
    return None


def is_json_content_type(header: str | None) -> bool:
    """Whether a Content-Type names JSON: `application/json`, any case, optionally with parameters (`; charset=utf-8`).

    A charset other than UTF-8 is refused too: the body is read as UTF-8 only.
    """
    if not header:
        return False
    media, _, params = header.partition(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def request_id(given: str | None, make: Any) -> str:
    """The caller's X-Request-ID if it is 1-64 characters of [A-Za-z0-9._-], else a fresh one from `make()`."""
    return given if given and REQUEST_ID.match(given) else make()
