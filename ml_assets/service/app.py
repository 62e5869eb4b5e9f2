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
has the threat model. The parts are modules beside this one: gate.py
(authentication, limits, audit), holder.py (champion and keys), scoring.py,
recorder.py (the prediction record), metrics.py, schemas.py and logs.py.

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
import threading
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from lib.settings import Rollout, Service, load_settings
from ml_assets.service.gate import Gate, error
from ml_assets.service.holder import ChampionHolder
from ml_assets.service.logs import install_json_logging
from ml_assets.service.metrics import Metrics
from ml_assets.service.recorder import PredictionRecorder
from ml_assets.service.schemas import PredictResponse, id_rule, predict_request, validation_detail
from ml_assets.service.scoring import answers, record_rows, shadow_rows

log = logging.getLogger("churn.service")

# The service's limits are the `deployment.service` section of the project settings.
Settings = Service

PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"},
    403: {"description": "the key lacks the predict scope"},
    413: {"description": "more ids than the batch limit, or an oversize body"},
    415: {"description": "the body is not sent as Content-Type: application/json"},
    422: {"description": "a malformed body: names the field, never echoes the input"},
    429: {"description": "the key's rate limit; Retry-After says when to try again"},
    503: {"description": "no champion yet, or the online store is down or too slow"},
}


class OnlineReader:
    """Online-store reads off the event loop, under a timeout, in a thread pool of their own (a stalled store can
    exhaust it, never the event loop or /health)."""

    def __init__(self, feature_store: Any, timeout_s: float) -> None:
        import anyio

        self.feature_store, self.timeout_s = feature_store, timeout_s
        # Feast's SQLite store shares one connection across threads: one read at a time there. Redis clients are thread-safe.
        self.lock = threading.Lock() if getattr(feature_store, "online_store", "sqlite") == "sqlite" else None
        self.threads = anyio.CapacityLimiter(32)

    def read(self, ids: list[str]) -> dict[str, list[Any]]:
        if self.lock is None:
            return self.feature_store.online_dict(ids)
        if not self.lock.acquire(timeout=self.timeout_s):
            raise TimeoutError("online store busy")
        try:
            return self.feature_store.online_dict(ids)
        finally:
            self.lock.release()

    async def __call__(self, ids: list[str]) -> dict[str, list[Any]]:
        import anyio

        with anyio.fail_after(self.timeout_s):
            return await anyio.to_thread.run_sync(self.read, ids, abandon_on_cancel=True, limiter=self.threads)


def _lifespan(holder: ChampionHolder, recorder: PredictionRecorder | None, settings: Settings) -> Any:
    """Load the champion (start anyway when that fails: /ready says why), poll the registry, drain the record on shutdown."""
    import anyio

    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
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

    return lifespan


def create_app(
    registry: Any = None,
    artifacts: Any = None,
    feature_store: Any = None,
    settings: Settings | None = None,
    rollout: Rollout | None = None,
    notifier: Any = None,
    contract_pattern: str | None = None,
) -> FastAPI:
    """The app; resources default to the project's configuration (the same environment the code location reads)."""
    if registry is None or artifacts is None or feature_store is None:
        from resources import build_artifacts, build_feature_store, build_notifier, build_registry

        loaded = load_settings()
        notifier = notifier or build_notifier(loaded, resolve_env=True)
        contract_pattern = contract_pattern or loaded.source.customer_id_pattern
        registry = registry or build_registry(resolve_env=True, settings=loaded)
        artifacts = artifacts or build_artifacts(loaded)
        feature_store = feature_store or build_feature_store(resolve_env=True, settings=loaded)
        settings = settings or loaded.deployment.service
        rollout = rollout or loaded.rollout
    if settings is None or rollout is None:
        loaded = load_settings()
        settings, rollout = settings or loaded.deployment.service, rollout or loaded.rollout
    install_json_logging()
    holder = ChampionHolder(registry, artifacts, notifier)
    metrics = Metrics(holder)
    recorder = PredictionRecorder(registry, metrics, settings.prediction_retention_days) if settings.record_predictions else None
    app = FastAPI(
        title="Churn scoring service",
        version="1.0",
        description="Churn probability per customer from the registry's champion model and the Feast online store. "
        "Send `Authorization: Bearer <key>` (churn apikey create).",
        lifespan=_lifespan(holder, recorder, settings),
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.recorder = recorder
    app.add_middleware(Gate, holder=holder, metrics=metrics, settings=settings)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": validation_detail(exc.errors()), "request_id": request.state.request_id})

    online = OnlineReader(feature_store, settings.store_timeout_seconds)
    _probe_routes(app, holder, metrics, online)
    _predict_route(app, holder, metrics, recorder, online, settings, rollout, contract_pattern)
    return app


def _probe_routes(app: FastAPI, holder: ChampionHolder, metrics: Metrics, online: OnlineReader) -> None:
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
            return error(503, "not ready: no champion model loaded", rid)
        try:
            await online(["readiness-probe"])
        except Exception as exc:  # noqa: BLE001
            metrics.store_errors.inc()
            log.error("readiness: online store did not answer (%s)", type(exc).__name__)
            return error(503, "not ready: online store unavailable", rid)
        return JSONResponse({"status": "ready", "model_version": model.version, "model_kind": model.kind})

    @app.get("/metrics")
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _predict_route(
    app: FastAPI,
    holder: ChampionHolder,
    metrics: Metrics,
    recorder: PredictionRecorder | None,
    online: OnlineReader,
    settings: Settings,
    rollout: Rollout,
    contract_pattern: str | None,
) -> None:
    request_model: type[BaseModel] = predict_request(settings.max_batch, id_rule(settings.customer_id_pattern, contract_pattern))
    body = {"requestBody": {"required": True, "content": {"application/json": {"schema": request_model.model_json_schema()}}}}

    @app.post("/predict", response_model=PredictResponse, openapi_extra=body, responses=PREDICT_RESPONSES)
    async def predict(request: Request) -> Any:
        rid = request.state.request_id
        raw = request.scope["state"].get("json")
        given = raw.get("customer_ids") if isinstance(raw, dict) else None
        if isinstance(given, list) and len(given) > settings.max_batch:
            request.state.ids = len(given)
            return error(413, f"{len(given)} ids in one request; the limit is {settings.max_batch}", rid, limit=settings.max_batch)
        try:
            parsed = request_model.model_validate(raw)
            ids, explain = parsed.customer_ids, parsed.explain  # type: ignore[attr-defined]
        except ValidationError as exc:
            return JSONResponse(status_code=422, content={"detail": validation_detail(exc.errors()), "request_id": rid})
        request.state.ids = len(ids)
        model = holder.current  # one read: the whole request uses this model even if a swap happens meanwhile
        if model is None:
            return error(503, "no champion model yet: run training_job so the registry has one", rid)
        request.state.model_version = model.version
        # An erased customer is unknown here: not looked up, not scored, not recorded (only the count, in the metrics).
        erased = {c for c, gone in zip(ids, holder.registry.is_erased(ids, holder.erased), strict=True) if gone}
        if erased:
            metrics.scored.labels(result="erased").inc(len(erased))
        unique = [c for c in dict.fromkeys(ids) if c not in erased]
        try:
            served = await online(unique) if unique else {}
        except Exception as exc:  # noqa: BLE001
            metrics.store_errors.inc()
            log.error("request_id=%s online store read failed (%s)", rid, type(exc).__name__)
            return error(503, "online store unavailable", rid)
        challengers = holder.challengers  # one read, like the champion
        canary = challengers[0] if challengers and rollout.canary_share > 0 else None
        out = answers(model, ids, unique, served, canary, rollout.canary_share, explain)
        metrics.scored.labels(result="ok").inc(sum(1 for p in out if p.status == 200))
        metrics.scored.labels(result="not_found").inc(sum(1 for p in out if p.status == 404))
        if recorder is not None:
            key_name = request.scope["state"].get("key_name")
            recorder.add(record_rows([p for p in out if p.customer_id not in erased], rid, key_name, model.version))
            if rollout.shadow and challengers:
                # Scored on the recorder's thread after the answer: recorded, never returned, never in the response's time.
                recorder.add(lambda: shadow_rows(challengers, unique, served, rid, key_name))
        return PredictResponse(request_id=rid, model_version=model.version, predictions=out)
