"""Online churn scoring: the registry's champion model behind HTTP, fed by the Feast online store.

    POST /predict  {"customer_ids": ["C00000001", ...]}   -> one result per id
    GET  /health   the process is up
    GET  /ready    a champion is loaded and the online store answers
    GET  /metrics  Prometheus text format

Callers send ids only: features come from the online store (the same Feast
feature service training and batch scoring read), so a request cannot inject
feature values. The service follows the registry: a background thread polls
the champion and, on a version change, loads the new ONNX artifact (sha256
verified) and swaps it in with one reference assignment; requests in flight
finish on the old model, which keeps serving until the new one is ready.

Run it with `make serve`, or `uvicorn --factory ml_assets.service.app:create_app`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from ml_assets.lib.contract import customer_id_ok
from ml_assets.settings import Service, load_settings

log = logging.getLogger("churn.service")
access_log = logging.getLogger("churn.service.access")


# The data contract's default customer-id rule (ml_assets/lib/contract.py): printable, 1 to 64
# characters, no leading or trailing white space. An id the pipeline accepts can be scored.
def _customer_id(value: str) -> str:
    if not customer_id_ok(None)(value):
        raise ValueError("a customer id is printable text of 1 to 64 characters without leading or trailing white space")
    return value


REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# The service's limits are the `deployment.service` section of the project settings.
Settings = Service


@dataclass(frozen=True)
class LoadedModel:
    version: str
    kind: str
    features: tuple[str, ...]
    session: Any
    loaded_at: float


class ChampionHolder:
    """The champion's ONNX session, swapped atomically when the registry names a new one."""

    def __init__(self, registry: Any, artifacts: Any) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._load_lock = threading.Lock()

    def refresh(self) -> LoadedModel | None:
        from ml_assets.models import load_onnx

        with self._load_lock:
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


class PredictRequest(BaseModel):
    # Unknown fields are refused (422): a caller cannot smuggle feature values in.
    model_config = ConfigDict(extra="forbid")
    customer_ids: list[Annotated[str, StringConstraints(max_length=64), AfterValidator(_customer_id)]] = Field(
        min_length=1, description="Customer ids to score (1 to the service's batch limit)."
    )


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
        self.store_errors = Counter("churn_online_store_errors", "Online store reads that failed.", registry=self.registry)
        self.scored = Counter("churn_predictions", "Ids answered, by result.", ["result"], registry=self.registry)

        class ModelInfo:
            """The model in use, read from the holder at scrape time (never stale)."""

            def collect(self):  # noqa: ANN202
                family = GaugeMetricFamily("churn_model_info", "The champion model version in use (value 1).", labels=["version", "kind"])
                if holder.current is not None:
                    family.add_metric([holder.current.version, holder.current.kind], 1.0)
                yield family

        self.registry.register(ModelInfo())


def _error(status: int, detail: str, request_id: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, "request_id": request_id, **extra})


class AccessLog:
    """Request id, body-size limit, metrics and one audit line per request (a plain ASGI middleware: no per-request task)."""

    PATHS = ("/predict", "/health", "/ready", "/metrics")

    def __init__(self, app: Any, metrics: Metrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state.update(request_id=request_id, ids=0, model_version="-")
        status = {"code": 500}
        started = time.perf_counter()

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await _error(413, f"request body over {self.max_body_bytes} bytes", request_id)(scope, receive, send_with_id)
        else:
            await self.app(scope, receive, send_with_id)
        elapsed = time.perf_counter() - started
        path = scope["path"] if scope["path"] in self.PATHS else "other"
        self.metrics.requests.labels(path=path, status=str(status["code"])).inc()
        self.metrics.latency.labels(path=path).observe(elapsed)
        # Audit line: who asked how much of which model; never feature values or secrets.
        access_log.info(
            "request_id=%s method=%s path=%s status=%s ids=%d model=%s latency_ms=%.2f",
            request_id,
            scope["method"],
            scope["path"],
            status["code"],
            state.get("ids", 0),
            state.get("model_version", "-"),
            elapsed * 1e3,
        )


def create_app(registry: Any = None, artifacts: Any = None, feature_store: Any = None, settings: Settings | None = None) -> FastAPI:
    """The app; resources default to the project's configuration (the same environment the code location reads)."""
    from contextlib import asynccontextmanager

    if registry is None or artifacts is None or feature_store is None:
        from resources import build_artifacts, build_feature_store, build_registry

        loaded = load_settings()
        registry = registry or build_registry(resolve_env=True, settings=loaded)
        artifacts = artifacts or build_artifacts(loaded)
        feature_store = feature_store or build_feature_store(resolve_env=True, settings=loaded)
        settings = settings or loaded.deployment.service
    settings = settings or load_settings().deployment.service
    if not log.handlers:
        # uvicorn configures only its own loggers; the audit lines need a handler of their own.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    holder = ChampionHolder(registry, artifacts)
    metrics = Metrics(holder)
    # One online-store read at a time: Feast's SQLite store shares one connection across threads.
    store_lock = threading.Lock()
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        try:
            holder.refresh()
        except Exception as exc:  # noqa: BLE001 (start anyway; /ready says why)
            holder.last_error = f"{type(exc).__name__}: {exc}"
            log.error("no champion loaded at start: %s", holder.last_error)
        poller = threading.Thread(target=holder.poll_forever, args=(stop, settings.reload_seconds), name="champion-poller", daemon=True)
        poller.start()
        yield
        stop.set()
        poller.join(timeout=5)

    app = FastAPI(
        title="Churn scoring service",
        version="1.0",
        description="Churn probability per customer from the registry's champion model and the Feast online store.",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.metrics = metrics

    app.add_middleware(AccessLog, metrics=metrics, max_body_bytes=settings.max_body_bytes)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "no champion loaded, or the online store does not answer"}})
    async def ready(request: Request) -> JSONResponse:
        model = holder.current
        if model is None:
            return _error(
                503, f"no champion model loaded ({holder.last_error or 'the registry has no champion yet'})", request.state.request_id
            )
        try:
            with store_lock:
                feature_store.online_dict(["readiness-probe"])
        except Exception as exc:  # noqa: BLE001
            metrics.store_errors.inc()
            log.error("readiness: online store did not answer: %s", exc)
            return _error(503, "online store unavailable", request.state.request_id)
        return JSONResponse({"status": "ready", "model_version": model.version, "model_kind": model.kind})

    @app.get("/metrics")
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses={
            413: {"description": "more ids than the batch limit, or an oversize body"},
            503: {"description": "no champion yet, or the online store is down"},
        },
    )
    async def predict(body: PredictRequest, request: Request) -> Any:
        # Runs on the event loop: the online read (about 1 ms) and scoring are
        # shorter than a hop to the thread pool and back, and one process has
        # one GIL either way (measured in benchmarks/bench_service.py).
        import numpy as np

        from ml_assets.lib.export import onnx_churn_probability

        rid = request.state.request_id
        ids = body.customer_ids
        request.state.ids = len(ids)
        if len(ids) > settings.max_batch:
            return _error(413, f"{len(ids)} ids in one request; the limit is {settings.max_batch}", rid, limit=settings.max_batch)
        model = holder.current  # one read: the whole request uses this model even if a swap happens meanwhile
        if model is None:
            return _error(503, "no champion model yet: run training_job so the registry has one", rid)
        request.state.model_version = model.version
        unique = list(dict.fromkeys(ids))
        try:
            with store_lock:
                served = feature_store.online_dict(unique)
        except Exception as exc:  # noqa: BLE001
            metrics.store_errors.inc()
            log.error("request_id=%s online store read failed: %s", rid, exc)
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
        return PredictResponse(request_id=rid, model_version=model.version, predictions=out)

    return app
