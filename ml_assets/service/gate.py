"""In front of every request: request id, authentication, rate limit, a bounded body, one audit line (an ASGI middleware)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import Response
from fastapi.responses import JSONResponse

from lib.access import (
    BodyError,
    TokenBucket,
    is_json_content_type,
    parse_json_body,
    request_id,
    required_scope,
    retry_after_header,
)
from lib.governance import key_matches, parse_token
from lib.settings import Service

if TYPE_CHECKING:
    from ml_assets.service.holder import ChampionHolder, Key
    from ml_assets.service.metrics import Metrics

access_log = logging.getLogger("churn.service.access")


def error(status: int, detail: str, request_id: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, "request_id": request_id, **extra}, headers=headers)


class Gate:
    """Request id, authentication, rate limit, bounded body and one JSON audit line per request.

    A plain ASGI middleware (no per-request task). It runs before FastAPI
    sees the request: a refused request costs no parsing and reaches no
    handler; the body of a POST is read here, at most `max_body_bytes` of it,
    and handed on parsed.
    """

    PATHS = ("/predict", "/health", "/ready", "/metrics")

    def __init__(self, app: Any, holder: ChampionHolder, metrics: Metrics, settings: Service) -> None:
        self.app, self.holder, self.metrics, self.settings = app, holder, metrics, settings
        self.buckets: dict[str, TokenBucket] = {}

    def _authenticate(self, headers: dict[str, str], scope_needed: str | None) -> tuple[int, str, Key | None]:
        """(0, "", key) when the request may go on, else (status, detail, None)."""
        if scope_needed is None or not self.settings.require_api_key:
            return 0, "", None
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        parsed = parse_token(token.strip()) if scheme.lower() == "bearer" else None
        key = self.holder.keys.get(parsed[0]) if parsed else None
        if key is None or not key_matches(key.salt, key.digest, parsed[1]):  # type: ignore[index]
            # One answer for a missing, malformed, unknown or revoked key: nothing to tell them apart.
            return 401, "a valid API key is required: Authorization: Bearer <key> (churn apikey create)", None
        if scope_needed not in key.scopes:
            return 403, f"this key's scopes ({', '.join(sorted(key.scopes))}) do not include {scope_needed}", key
        return 0, "", key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = request_id(headers.get("x-request-id"), lambda: uuid.uuid4().hex)
        state = scope.setdefault("state", {})
        state.update(request_id=rid, ids=0, model_version="-", key_name="-")
        status = {"code": 500}
        started = time.perf_counter()

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            refusal = await self._refusal(scope, receive, headers, state)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(scope, self._replay(state.pop("body")) if "body" in state else receive, send_with_id)
        finally:
            # Written however the request ended (an exception included: status 500 unless a response went out).
            self._audit(scope, state, status["code"], time.perf_counter() - started)

    def _audit(self, scope: dict[str, Any], state: dict[str, Any], status: int, elapsed: float) -> None:
        path = scope["path"] if scope["path"] in self.PATHS else "other"
        self.metrics.requests.labels(path=path, status=str(status)).inc()
        self.metrics.latency.labels(path=path).observe(elapsed)
        # Who asked how much of which model; never feature values, keys or bodies. The JSON formatter
        # escapes the path, so a CR LF in it cannot forge a line.
        access_log.info(
            "request",
            extra={
                "fields": {
                    "request_id": state["request_id"],
                    "key": state.get("key_name", "-"),
                    "method": scope["method"],
                    "path": scope["path"][:200],
                    "status": status,
                    "ids": state.get("ids", 0),
                    "model": state.get("model_version", "-"),
                    "latency_ms": round(elapsed * 1e3, 2),
                }
            },
        )

    async def _refusal(self, scope: dict[str, Any], receive: Any, headers: dict[str, str], state: dict[str, Any]) -> Response | None:
        rid = state["request_id"]
        code, detail, key = self._authenticate(headers, required_scope(scope["path"]))
        if key is not None:
            state["key_name"] = key.name
        if code:
            self.metrics.refused.labels(reason=str(code)).inc()
            return error(code, detail, rid, {"www-authenticate": "Bearer"} if code == 401 else None)
        if key is not None:
            bucket = self.buckets.setdefault(key.name, TokenBucket(self.settings.rate_per_second, self.settings.rate_burst))
            wait = bucket.take(time.monotonic())
            if wait:
                self.metrics.refused.labels(reason="429").inc()
                return error(
                    429,
                    f"rate limit of key {key.name}: {self.settings.rate_per_second:g}/s",
                    rid,
                    {"retry-after": retry_after_header(wait)},
                )
        if scope["method"] in ("POST", "PUT", "PATCH"):
            if scope["path"] == "/predict" and not is_json_content_type(headers.get("content-type")):
                self.metrics.refused.labels(reason="415").inc()
                return error(415, "send the body as JSON with Content-Type: application/json", rid)
            limit = self.settings.max_body_bytes
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                self.metrics.refused.labels(reason="413").inc()
                return error(413, f"request body over {limit} bytes", rid, {"connection": "close"})
            # Counted as it streams in (chunked bodies have no Content-Length): reading stops at the limit.
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return error(400, "the client went away before sending the body", rid)
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    self.metrics.refused.labels(reason="413").inc()
                    return error(413, f"request body over {limit} bytes", rid, {"connection": "close"})
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            state["body"] = b"".join(chunks)
            if scope["path"] == "/predict":
                try:
                    state["json"] = parse_json_body(state["body"])
                except BodyError as exc:
                    self.metrics.refused.labels(reason="422").inc()
                    return error(422, str(exc), rid, field=exc.field)
        return None

    @staticmethod
    def _replay(body: bytes) -> Any:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # as a server does: wait until the client disconnects
            return {"type": "http.disconnect"}

        return receive
