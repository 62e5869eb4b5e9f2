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
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

log = logging.getLogger("churn.service")
access_log = logging.getLogger("churn.service.access")

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class Settings:
    max_batch: int = 1_000
    max_body_bytes: int = 256_000
    reload_seconds: float = 2.0


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
        from ml_assets.lib.export import onnx_session

        with self._load_lock:
            champion = self.registry.champion()
            if champion is None or (self.current is not None and self.current.version == champion.version):
                return self.current
            # Verified before a byte is parsed: a tampered or partial artifact raises and the old model stays.
            data = self.artifacts.get(champion.onnx_uri or "", champion.onnx_sha256 or "")
            loaded = LoadedModel(champion.version, champion.kind, tuple(champion.features), onnx_session(data), time.time())
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
    customer_ids: list[Annotated[str, StringConstraints(pattern=CUSTOMER_ID_PATTERN)]] = Field(
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


def create_app(
    registry: Any = None, artifacts: Any = None, feature_store: Any = None, settings: Settings | None = None
) -> FastAPI:
    """The app; resources default to the project's configuration (the same environment the code location reads)."""
    from contextlib import asynccontextmanager

    if registry is None or artifacts is None or feature_store is None:
        from resources import build_feature_store, build_registry, build_resources

        defaults = build_resources()
        registry = registry or build_registry(resolve_env=True)
        artifacts = artifacts or defaults["artifacts"]
        feature_store = feature_store or build_feature_store(defaults["lake"].root, resolve_env=True)
    settings = settings or Settings()
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
        poller = threading.Thread(
            target=holder.poll_forever, args=(stop, settings.reload_seconds), name="champion-poller", daemon=True
        )
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

    @app.middleware("http")
    async def access(request: Request, call_next):  # noqa: ANN001, ANN202
        given = request.headers.get("x-request-id", "")
        request.state.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        request.state.ids = 0
        request.state.model_version = "-"
        length = request.headers.get("content-length")
        started = time.perf_counter()
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            response: Response = _error(413, f"request body over {settings.max_body_bytes} bytes", request.state.request_id)
        else:
            response = await call_next(request)
        elapsed = time.perf_counter() - started
        path = request.url.path if request.url.path in ("/predict", "/health", "/ready", "/metrics") else "other"
        metrics.requests.labels(path=path, status=str(response.status_code)).inc()
        metrics.latency.labels(path=path).observe(elapsed)
        response.headers["x-request-id"] = request.state.request_id
        # Audit line: who asked how much of which model; never feature values or secrets.
        access_log.info(
            "request_id=%s method=%s path=%s status=%s ids=%d model=%s latency_ms=%.2f",
            request.state.request_id,
            request.method,
            request.url.path,
            response.status_code,
            request.state.ids,
            request.state.model_version,
            elapsed * 1e3,
        )
        return response

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "no champion loaded, or the online store does not answer"}})
    def ready(request: Request) -> JSONResponse:
        model = holder.current
        if model is None:
            return _error(503, f"no champion model loaded ({holder.last_error or 'the registry has no champion yet'})", request.state.request_id)
        try:
            with store_lock:
                feature_store.online(["readiness-probe"])
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
    def predict(body: PredictRequest, request: Request) -> Any:
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
        try:
            with store_lock:
                served = feature_store.online(list(dict.fromkeys(ids)))
        except Exception as exc:  # noqa: BLE001
            metrics.store_errors.inc()
            log.error("request_id=%s online store read failed: %s", rid, exc)
            return _error(503, "online store unavailable", rid)
        rows = {r["customer_id"]: r for r in served.iter_rows(named=True)}
        known = [c for c in dict.fromkeys(ids) if all(rows[c].get(f) is not None for f in model.features)]
        scores: dict[str, float] = {}
        if known:
            matrix = np.array([[rows[c][f] for f in model.features] for c in known], dtype=np.float32)
            scores = dict(zip(known, onnx_churn_probability(model.session, matrix, workers=1).tolist(), strict=True))
        out = []
        for c in ids:
            if c in scores:
                ts = rows[c].get(f"{model.features[0]}__ts")
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None
                out.append(Prediction(customer_id=c, status=200, churn_probability=scores[c], feature_timestamp=stamp))
            else:
                out.append(Prediction(customer_id=c, status=404, error="unknown customer: no features in the online store"))
        metrics.scored.labels(result="ok").inc(sum(1 for p in out if p.status == 200))
        metrics.scored.labels(result="not_found").inc(sum(1 for p in out if p.status == 404))
        return PredictResponse(request_id=rid, model_version=model.version, predictions=out)

    return app
