"""Online churn scoring: the registry's champion model behind HTTP, fed by the Feast online store.

    POST /predict  {"customer_ids": ["C00000001", ...]}   -> one result per id      (scope predict)
    GET  /health   the process is up                                               (open)
    GET  /ready    a champion is loaded and the online store answers               (open, no internals)
    GET  /metrics  Prometheus text format; /docs and /openapi.json likewise        (scope metrics)

Callers authenticate with `Authorization: Bearer <key>` (keys from `churn
apikey create`; the service holds only their salted digests, reloaded from the
registry with the champion) and are rate-limited per key. Bodies are read up to
the limit and no further, parsed as strict UTF-8 JSON, and errors never echo
input. Online-store reads run off the event loop under a timeout, so a stalled
store costs a 503, not the process. Every prediction is appended to the
registry database's prediction_log by a writer thread (drained on shutdown),
and every request leaves one JSON log line. The rules are in
`lib/access.py` and `lib/governance.py`; docs/security.md
has the threat model.

Callers send ids only: features come from the online store (the same Feast
feature service training and batch scoring read), so a request cannot inject
feature values. The service follows the registry: a background thread polls
the champion and, on a version change, loads the new ONNX artifact (sha256
verified) and swaps it in with one reference assignment; requests in flight
finish on the old model, which keeps serving until the new one is ready.

Run it with `make serve`, or `uvicorn --factory ml_assets.service.app:create_app`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from lib.access import BodyError, TokenBucket, parse_json_body, request_id, required_scope, retry_after_header
from lib.contract import customer_id_ok
from lib.governance import key_matches, parse_token
from lib.settings import Service, load_settings

log = logging.getLogger("churn.service")
access_log = logging.getLogger("churn.service.access")


# The data contract's default customer-id rule (lib/contract.py): printable, 1 to 64
# characters, no leading or trailing white space. An id the pipeline accepts can be scored.
def _customer_id(value: str) -> str:
    if not customer_id_ok(None)(value):
        raise ValueError("a customer id is printable text of 1 to 64 characters without leading or trailing white space")
    return value


# The service's limits are the `deployment.service` section of the project settings.
Settings = Service


class JsonFormatter(logging.Formatter):
    """One JSON object per line: a client value (a path with CR LF in it) is escaped, so it cannot start a line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True, default=str)


@dataclass(frozen=True)
class LoadedModel:
    version: str
    kind: str
    features: tuple[str, ...]
    session: Any
    loaded_at: float


@dataclass(frozen=True)
class Key:
    key_id: str
    name: str
    scopes: frozenset[str]
    salt: str
    digest: str


class ChampionHolder:
    """The champion's ONNX session, swapped atomically when the registry names a new one; the API keys likewise."""

    def __init__(self, registry: Any, artifacts: Any) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.current: LoadedModel | None = None
        self.keys: dict[str, Key] = {}
        self.keys_loaded = False
        self.last_error: str | None = None
        self._load_lock = threading.Lock()

    def refresh(self) -> LoadedModel | None:
        from ml_assets.models import load_onnx

        with self._load_lock:
            self.keys = {
                k["key_id"]: Key(k["key_id"], k["name"], frozenset(k["scopes"].split(",")), k["salt"], k["digest"])
                for k in self.registry.api_keys()
            }
            self.keys_loaded = True
            champion = self.registry.champion()
            if champion is None or (self.current is not None and self.current.version == champion.version):
                return self.current
            # Verified before a byte is parsed: a tampered or partial artifact raises and the old model stays.
            loaded = LoadedModel(
                champion.version, champion.kind, tuple(champion.features), load_onnx(champion, self.artifacts), time.time()
            )
            previous, self.current = self.current, loaded
            log.info("champion loaded: %s (%s), replacing %s", loaded.version, loaded.kind, previous.version if previous else "none")
            return loaded

    def poll_forever(self, stop: threading.Event, every: float) -> None:
        while not stop.is_set():
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 (keep serving the old model, say why)
                self.last_error = f"{type(exc).__name__}: {exc}"
                current = self.current.version if self.current else "nothing"
                log.error("champion reload failed, still serving %s: %s", current, self.last_error)
            stop.wait(every)


class PredictionRecorder:
    """Appends prediction rows to the registry database from a thread of its own, off the request path.

    Rows wait in memory for at most `flush_s`; a failed write keeps them and
    retries; a clean shutdown (`close`) writes everything still waiting. Only
    when the database stays unreachable and `max_pending` rows pile up are the
    oldest dropped, counted in churn_prediction_records_dropped and logged.
    """

    def __init__(
        self, registry: Any, metrics: Metrics, retention_days: int | None, flush_s: float = 0.2, max_pending: int = 200_000
    ) -> None:
        self.registry, self.metrics, self.retention_days = registry, metrics, retention_days
        self.flush_s, self.max_pending = flush_s, max_pending
        self.queue: queue.SimpleQueue[list[dict[str, Any]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="prediction-recorder", daemon=True)
        self.expired_at = 0.0

    def start(self) -> None:
        self.thread.start()

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.queue.put(rows)

    def close(self, timeout: float = 30.0) -> None:
        self.queue.put(None)
        self.thread.join(timeout=timeout)

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        closing = False
        while not closing:
            deadline = time.monotonic() + self.flush_s
            while True:
                try:
                    item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                pending.extend(item)
            pending = self._write(pending, attempts=5 if closing else 1)
            self._expire()

    def _write(self, rows: list[dict[str, Any]], attempts: int) -> list[dict[str, Any]]:
        for attempt in range(attempts):
            if not rows:
                return rows
            try:
                self.registry.record_predictions(rows)
                self.metrics.recorded.inc(len(rows))
                return []
            except Exception as exc:  # noqa: BLE001 (the database is away: keep the rows and try again)
                log.error("prediction record: %d row(s) not written yet (%s); retrying", len(rows), type(exc).__name__)
                time.sleep(min(2.0, 0.2 * 2**attempt))
        if len(rows) > self.max_pending:
            dropped = len(rows) - self.max_pending
            self.metrics.record_dropped.inc(dropped)
            log.error("prediction record: the database has been unreachable too long; dropped the oldest %d row(s)", dropped)
            rows = rows[dropped:]
        return rows

    def _expire(self) -> None:
        if self.retention_days is None or time.monotonic() - self.expired_at < 3600:
            return
        self.expired_at = time.monotonic()
        try:
            gone = self.registry.expire_predictions(dt.datetime.now(dt.UTC) - dt.timedelta(days=self.retention_days))
            if gone:
                log.info("prediction record: %d row(s) older than %d days deleted", gone, self.retention_days)
        except Exception as exc:  # noqa: BLE001 (retried next hour)
            log.error("prediction record: retention cleanup failed (%s)", type(exc).__name__)


def _predict_request(max_batch: int) -> type[BaseModel]:
    class PredictRequest(BaseModel):
        # Unknown fields are refused (422): a caller cannot smuggle feature values in.
        model_config = ConfigDict(extra="forbid")
        customer_ids: list[Annotated[str, StringConstraints(max_length=64), AfterValidator(_customer_id)]] = Field(
            min_length=1, max_length=max_batch, description=f"Customer ids to score (1 to {max_batch})."
        )

    return PredictRequest


class Prediction(BaseModel):
    customer_id: str
    status: int = Field(description="200 scored, 404 unknown to the online store (this item only).")
    churn_probability: float | None = None
    feature_timestamp: str | None = Field(default=None, description="When the served features were valid (UTC, ISO 8601).")
    error: str | None = None


class PredictResponse(BaseModel):
    request_id: str
    model_version: str
    predictions: list[Prediction]


class Metrics:
    def __init__(self, holder: ChampionHolder) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, values
        from prometheus_client.core import GaugeMetricFamily

        # Importing feast sets PROMETHEUS_MULTIPROC_DIR (a side effect of its
        # metrics module), which switches metrics created afterwards to shared
        # files keyed by pid. This service is one process with its own counts.
        values.ValueClass = values.MutexValue
        self.registry = CollectorRegistry()
        self.requests = Counter("churn_requests", "HTTP requests by path and status.", ["path", "status"], registry=self.registry)
        self.latency = Histogram(
            "churn_request_seconds",
            "Request latency by path.",
            ["path"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.store_errors = Counter("churn_online_store_errors", "Online store reads that failed or timed out.", registry=self.registry)
        self.scored = Counter("churn_predictions", "Ids answered, by result.", ["result"], registry=self.registry)
        self.refused = Counter("churn_refused", "Requests refused before scoring, by reason.", ["reason"], registry=self.registry)
        self.recorded = Counter("churn_prediction_records", "Predictions written to prediction_log.", registry=self.registry)
        self.record_dropped = Counter(
            "churn_prediction_records_dropped", "Prediction records dropped (database unreachable too long).", registry=self.registry
        )

        class ModelInfo:
            """The model in use, read from the holder at scrape time (never stale)."""

            def collect(self):  # noqa: ANN202
                family = GaugeMetricFamily("churn_model_info", "The champion model version in use (value 1).", labels=["version", "kind"])
                if holder.current is not None:
                    family.add_metric([holder.current.version, holder.current.kind], 1.0)
                yield family

        self.registry.register(ModelInfo())


def _error(status: int, detail: str, request_id: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, "request_id": request_id, **extra}, headers=headers)


class Gate:
    """Request id, authentication, rate limit, bounded body and one JSON audit line per request.

    A plain ASGI middleware (no per-request task). It runs before FastAPI
    sees the request: a refused request costs no parsing and reaches no
    handler; the body of a POST is read here, at most `max_body_bytes` of it,
    and handed on parsed.
    """

    PATHS = ("/predict", "/health", "/ready", "/metrics")

    def __init__(self, app: Any, holder: ChampionHolder, metrics: Metrics, settings: Settings) -> None:
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
            return _error(code, detail, rid, {"www-authenticate": "Bearer"} if code == 401 else None)
        if key is not None:
            bucket = self.buckets.setdefault(key.name, TokenBucket(self.settings.rate_per_second, self.settings.rate_burst))
            wait = bucket.take(time.monotonic())
            if wait:
                self.metrics.refused.labels(reason="429").inc()
                return _error(
                    429,
                    f"rate limit of key {key.name}: {self.settings.rate_per_second:g}/s",
                    rid,
                    {"retry-after": retry_after_header(wait)},
                )
        if scope["method"] in ("POST", "PUT", "PATCH"):
            limit = self.settings.max_body_bytes
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                self.metrics.refused.labels(reason="413").inc()
                return _error(413, f"request body over {limit} bytes", rid, {"connection": "close"})
            # Counted as it streams in (chunked bodies have no Content-Length): reading stops at the limit.
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return _error(400, "the client went away before sending the body", rid)
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    self.metrics.refused.labels(reason="413").inc()
                    return _error(413, f"request body over {limit} bytes", rid, {"connection": "close"})
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            state["body"] = b"".join(chunks)
            if scope["path"] == "/predict":
                try:
                    state["json"] = parse_json_body(state["body"])
                except BodyError as exc:
                    self.metrics.refused.labels(reason="422").inc()
                    return _error(422, str(exc), rid, field=exc.field)
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


def _validation_detail(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors without `input` or `ctx`: where and what, never the caller's value echoed back."""
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))[:300], "type": e.get("type", "")} for e in errors[:20]]


def create_app(registry: Any = None, artifacts: Any = None, feature_store: Any = None, settings: Settings | None = None) -> FastAPI:
    """The app; resources default to the project's configuration (the same environment the code location reads)."""
    from contextlib import asynccontextmanager

    import anyio

    if registry is None or artifacts is None or feature_store is None:
        from resources import build_artifacts, build_feature_store, build_registry

        loaded = load_settings()
        registry = registry or build_registry(resolve_env=True, settings=loaded)
        artifacts = artifacts or build_artifacts(loaded)
        feature_store = feature_store or build_feature_store(resolve_env=True, settings=loaded)
        settings = settings or loaded.deployment.service
    settings = settings or load_settings().deployment.service
    service_log = logging.getLogger("churn.service")
    if not any(isinstance(h.formatter, JsonFormatter) for h in service_log.handlers):
        # uvicorn configures only its own loggers; these lines get a handler of their own, one JSON object per line.
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        service_log.addHandler(handler)
        service_log.setLevel(logging.INFO)
    holder = ChampionHolder(registry, artifacts)
    metrics = Metrics(holder)
    recorder = PredictionRecorder(registry, metrics, settings.prediction_retention_days) if settings.record_predictions else None
    request_model = _predict_request(settings.max_batch)
    # Feast's SQLite store shares one connection across threads: one read at a time there. Redis clients are thread-safe.
    store_lock = threading.Lock() if getattr(feature_store, "online_store", "sqlite") == "sqlite" else None
    # Store reads run in threads of their own pool: a stalled store can exhaust it, never the event loop or /health.
    store_threads = anyio.CapacityLimiter(32)
    stop = threading.Event()

    def read_store(ids: list[str]) -> dict[str, list[Any]]:
        if store_lock is None:
            return feature_store.online_dict(ids)
        if not store_lock.acquire(timeout=settings.store_timeout_seconds):
            raise TimeoutError("online store busy")
        try:
            return feature_store.online_dict(ids)
        finally:
            store_lock.release()

    async def online(ids: list[str]) -> dict[str, list[Any]]:
        with anyio.fail_after(settings.store_timeout_seconds):
            return await anyio.to_thread.run_sync(read_store, ids, abandon_on_cancel=True, limiter=store_threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        try:
            await anyio.to_thread.run_sync(holder.refresh)
        except Exception as exc:  # noqa: BLE001 (start anyway; /ready says why)
            holder.last_error = f"{type(exc).__name__}: {exc}"
            log.error("no champion loaded at start: %s", holder.last_error)
        if settings.require_api_key and holder.keys_loaded and not holder.keys:
            log.warning("no active API key in the registry: every request but /health and /ready gets 401; churn apikey create NAME")
        poller = threading.Thread(target=holder.poll_forever, args=(stop, settings.reload_seconds), name="champion-poller", daemon=True)
        poller.start()
        if recorder:
            recorder.start()
        yield
        stop.set()
        poller.join(timeout=5)
        if recorder:
            await anyio.to_thread.run_sync(recorder.close)

    app = FastAPI(
        title="Churn scoring service",
        version="1.0",
        description="Churn probability per customer from the registry's champion model and the Feast online store. "
        "Send `Authorization: Bearer <key>` (churn apikey create).",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.recorder = recorder

    app.add_middleware(Gate, holder=holder, metrics=metrics, settings=settings)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _validation_detail(exc.errors()), "request_id": request.state.request_id})

    @app.get("/health")
    async def health() -> dict[str, str]:
        # On the event loop and touching nothing: it answers while the store or the database stall.
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "no champion loaded, or the online store does not answer"}})
    async def ready(request: Request) -> JSONResponse:
        rid = request.state.request_id
        model = holder.current
        # What is wrong, never how (no host names, users or exception text): those go to the log.
        if model is None:
            return _error(503, "not ready: no champion model loaded", rid)
        try:
            await online(["readiness-probe"])
        except Exception as exc:  # noqa: BLE001
            metrics.store_errors.inc()
            log.error("readiness: online store did not answer (%s)", type(exc).__name__)
            return _error(503, "not ready: online store unavailable", rid)
        return JSONResponse({"status": "ready", "model_version": model.version, "model_kind": model.kind})

    @app.get("/metrics")
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/predict",
        response_model=PredictResponse,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": request_model.model_json_schema()}}}},
        responses={
            401: {"description": "no valid API key"},
            403: {"description": "the key lacks the predict scope"},
            413: {"description": "more ids than the batch limit, or an oversize body"},
            422: {"description": "a malformed body: names the field, never echoes the input"},
            429: {"description": "the key's rate limit; Retry-After says when to try again"},
            503: {"description": "no champion yet, or the online store is down or too slow"},
        },
    )
    async def predict(request: Request) -> Any:
        import numpy as np

        from lib.export import onnx_churn_probability

        rid = request.state.request_id
        raw = request.scope["state"].get("json")
        given = raw.get("customer_ids") if isinstance(raw, dict) else None
        if isinstance(given, list) and len(given) > settings.max_batch:
            request.state.ids = len(given)
            return _error(413, f"{len(given)} ids in one request; the limit is {settings.max_batch}", rid, limit=settings.max_batch)
        try:
            ids = request_model.model_validate(raw).customer_ids
        except ValidationError as exc:
            return JSONResponse(status_code=422, content={"detail": _validation_detail(exc.errors()), "request_id": rid})
        request.state.ids = len(ids)
        model = holder.current  # one read: the whole request uses this model even if a swap happens meanwhile
        if model is None:
            return _error(503, "no champion model yet: run training_job so the registry has one", rid)
        request.state.model_version = model.version
        unique = list(dict.fromkeys(ids))
        try:
            served = await online(unique)
        except Exception as exc:  # noqa: BLE001
            metrics.store_errors.inc()
            log.error("request_id=%s online store read failed (%s)", rid, type(exc).__name__)
            return _error(503, "online store unavailable", rid)
        # Feast answers in request order, one value per id and feature (None when it does not know the id).
        columns = [served[f] for f in model.features]
        known = [i for i in range(len(unique)) if all(col[i] is not None for col in columns)]
        scores: dict[str, float] = {}
        stamps: dict[str, int] = {}
        if known:
            matrix = np.array([[col[i] for col in columns] for i in known], dtype=np.float32)
            probabilities = onnx_churn_probability(model.session, matrix, workers=1).tolist()
            for i, p in zip(known, probabilities, strict=True):
                scores[unique[i]] = p
                stamps[unique[i]] = served[f"{model.features[0]}__ts"][i]
        out = []
        for c in ids:
            if c in scores:
                ts = stamps[c]
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None
                out.append(Prediction(customer_id=c, status=200, churn_probability=scores[c], feature_timestamp=stamp))
            else:
                out.append(Prediction(customer_id=c, status=404, error="unknown customer: no features in the online store"))
        metrics.scored.labels(result="ok").inc(sum(1 for p in out if p.status == 200))
        metrics.scored.labels(result="not_found").inc(sum(1 for p in out if p.status == 404))
        if recorder is not None:
            now = dt.datetime.now(dt.UTC)
            key_name = request.scope["state"].get("key_name")
            recorder.add(
                [
                    {
                        "at": now,
                        "request_id": rid,
                        "key_name": None if key_name == "-" else key_name,
                        "customer_id": p.customer_id,
                        "status": p.status,
                        "churn_probability": p.churn_probability,
                        "model_version": model.version,
                        "arm": None,
                    }
                    for p in out
                ]
            )
        return PredictResponse(request_id=rid, model_version=model.version, predictions=out)

    return app
