"""The online scoring service over real HTTP on 127.0.0.1, against the e2e run's registry, artifacts and SQLite online store.

The online store holds the e2e run's newest scored day, so the service's
answers can be compared with that day's batch predictions. Tests that change
the champion work on a copy of the registry.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import polars as pl
import pytest

from lib.features import cutoff_for
from ml_assets_tests.conftest import E2E_DRIFT_DAYS, PipelineRun, feature_store_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]
SERVED_DAY = E2E_DRIFT_DAYS[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(registry, artifacts, feature_store, rollout: object = None, **settings: object) -> Iterator[str]:
    import uvicorn

    from lib.settings import Rollout
    from ml_assets.service.app import Settings, create_app

    # Keys off unless a test asks for them: these tests are about scoring; test_service_security.py is about the door.
    app = create_app(registry, artifacts, feature_store, Settings(**{"require_api_key": False, **settings}), rollout or Rollout())
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "the service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _registry_copy(e2e: PipelineRun, tmp_path: Path):
    from resources import ModelRegistry

    copy = tmp_path / "registry.sqlite"
    shutil.copy(e2e.resources["registry"].url.removeprefix("sqlite:///"), copy)
    return ModelRegistry(url=f"sqlite:///{copy}")


@pytest.fixture
def live(e2e: PipelineRun) -> Iterator[str]:
    with serve(e2e.resources["registry"], e2e.resources["artifacts"], feature_store_for(e2e.root, str(e2e.root / "lake"))) as url:
        yield url


def test_scores_equal_batch_scoring_for_the_same_customers_and_features(e2e: PipelineRun, live: str) -> None:
    batch = e2e.read("batch_predictions", [SERVED_DAY]).sort("customer_id").head(40)
    ids = batch["customer_id"].to_list()
    response = httpx.post(f"{live}/predict", json={"customer_ids": ids}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == e2e.resources["registry"].champion().version == batch["model_version"][0]
    got = pl.DataFrame(body["predictions"])
    assert got["customer_id"].to_list() == ids and set(got["status"]) == {200}
    assert got["churn_probability"].to_list() == pytest.approx(batch["churn_probability"].to_list(), abs=1e-9)
    assert set(got["feature_timestamp"]) == {cutoff_for(SERVED_DAY).strftime("%Y-%m-%dT%H:%M:%SZ")}
    # One id alone gets the same score as in the batch.
    single = httpx.post(f"{live}/predict", json={"customer_ids": ids[:1]}, timeout=30).json()["predictions"][0]
    assert single["churn_probability"] == pytest.approx(batch["churn_probability"][0], abs=1e-9)


def test_explain_returns_the_reasons_batch_scoring_stored_for_the_same_customer_and_model(e2e: PipelineRun, live: str) -> None:
    # The stored reasons are the day's highest scores' (rollout.reasons_share); the service explains any id asked for.
    batch = e2e.read("batch_predictions", [SERVED_DAY]).filter(pl.col("reason_1").is_not_null()).sort("customer_id").head(25)
    ids = batch["customer_id"].to_list()
    body = httpx.post(f"{live}/predict", json={"customer_ids": ids, "explain": True}, timeout=30).json()
    assert body["model_version"] == batch["model_version"][0]
    for p, row in zip(body["predictions"], batch.iter_rows(named=True), strict=True):
        assert p["customer_id"] == row["customer_id"] and p["churn_probability"] == pytest.approx(row["churn_probability"], abs=1e-9)
        stored = [(row[f"reason_{r}"], row[f"contribution_{r}"]) for r in (1, 2, 3) if row[f"reason_{r}"] is not None]
        got = [(r["label"], r["contribution"]) for r in p["reasons"]]
        assert [r["rank"] for r in p["reasons"]] == list(range(1, len(got) + 1))
        assert [g[0] for g in got] == [s[0] for s in stored]
        assert [g[1] for g in got] == pytest.approx([s[1] for s in stored], abs=1e-9)
    assert any(p["reasons"] for p in body["predictions"])
    # Without the flag the answer is as before: no reasons computed or returned.
    plain = httpx.post(f"{live}/predict", json={"customer_ids": ids[:3]}, timeout=30).json()
    assert all(p["reasons"] is None for p in plain["predictions"])


def test_errors_are_clear_and_per_item_where_they_can_be(e2e: PipelineRun, live: str, caplog: pytest.LogCaptureFixture) -> None:
    known = e2e.read("batch_predictions", [SERVED_DAY])["customer_id"][0]
    caplog.set_level(logging.INFO, logger="churn.service.access")
    mixed = httpx.post(f"{live}/predict", json={"customer_ids": [known, "C99999999"]}, headers={"x-request-id": "audit-123"})
    assert mixed.status_code == 200 and mixed.headers["x-request-id"] == "audit-123"
    first, unknown = mixed.json()["predictions"]
    assert first["status"] == 200 and unknown["status"] == 404 and "unknown customer" in unknown["error"]
    # The audit line is written once the response has been sent: give the server thread a moment.
    deadline = time.time() + 5
    while not any(getattr(r, "fields", {}).get("request_id") == "audit-123" for r in caplog.records):
        assert time.time() < deadline, "no access log line for the request"
        time.sleep(0.02)
    line = next(r.fields for r in caplog.records if getattr(r, "fields", {}).get("request_id") == "audit-123")
    assert line["ids"] == 2 and line["status"] == 200 and line["model"] != "-" and line["latency_ms"] > 0

    for body, field in (({}, "customer_ids"), ({"customer_ids": "C1"}, "customer_ids"), ({"customer_ids": []}, "customer_ids")):
        bad = httpx.post(f"{live}/predict", json=body)
        assert bad.status_code == 422 and field in bad.text, body
    injected = httpx.post(f"{live}/predict", json={"customer_ids": [known], "features": {"recency_days": 0}})
    assert injected.status_code == 422 and "features" in injected.text  # callers cannot supply feature values
    # Ids follow the documented pattern ([A-Za-z0-9][A-Za-z0-9_.:-]{0,63}) and the data contract's rule: 422 naming the
    # rule, never the value. Numeric, zero-padded and UUID ids pass; an unknown one is a 404 on its item.
    for malformed in ("C00000001\n", " C1", "", "C" * 65, "C1\x00", "x' OR 1=1 --", "Müller", "C1;DROP", "-C1", "C 1"):
        refused = httpx.post(f"{live}/predict", json={"customer_ids": ["C00000001", malformed]})
        assert refused.status_code == 422, repr(malformed)
        assert refused.json()["detail"][0]["loc"][-1] == "1", refused.text
        assert len(malformed) < 4 or malformed not in refused.text  # nothing echoed
    ok = httpx.post(f"{live}/predict", json={"customer_ids": ["00042", "0b6f3c1e-8d1a-4f4e-9c55-0a4f2d9e7b11", "shop:42"]})
    assert ok.status_code == 200 and [p["status"] for p in ok.json()["predictions"]] == [404, 404, 404]
    # JSON only, said so: a body sent as text, form data or without a Content-Type is a 415 before it is read.
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"):
        headers = {"content-type": content_type} if content_type else {}
        sent = httpx.post(f"{live}/predict", content=b'{"customer_ids": ["C00000001"]}', headers=headers)
        assert sent.status_code == 415 and "application/json" in sent.json()["detail"], content_type
    assert (
        httpx.post(
            f"{live}/predict", content=b'{"customer_ids": ["C00000001"]}', headers={"content-type": "Application/JSON; charset=UTF-8"}
        ).status_code
        == 200
    )
    oversize = httpx.post(f"{live}/predict", json={"customer_ids": [f"C{i:08d}" for i in range(1001)]})
    assert oversize.status_code == 413 and oversize.json()["limit"] == 1000
    huge = httpx.post(
        f"{live}/predict", content=b'{"customer_ids": ["' + b"A" * 300_000 + b'"]}', headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413


def test_health_ready_and_metrics(e2e: PipelineRun, live: str) -> None:
    current = e2e.resources["registry"].champion()
    champion = current.version
    assert httpx.get(f"{live}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{live}/ready")
    assert ready.status_code == 200 and ready.json()["model_version"] == champion
    httpx.post(f"{live}/predict", json={"customer_ids": ["C00000001"]})
    text = httpx.get(f"{live}/metrics").text
    assert f'churn_model_info{{kind="{current.kind}",version="{champion}"}} 1.0' in text
    assert 'churn_requests_total{path="/predict",status="200"}' in text
    assert "churn_request_seconds_bucket" in text and "churn_online_store_errors_total 0.0" in text


def test_no_champion_and_online_store_down_answer_503(e2e: PipelineRun, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from resources import ModelRegistry

    empty = ModelRegistry(url=f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with serve(empty, e2e.resources["artifacts"], feature_store_for(e2e.root, str(e2e.root / "lake"))) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/ready").status_code == 503
        response = httpx.post(f"{url}/predict", json={"customer_ids": ["C00000001"]})
        assert response.status_code == 503 and "no champion" in response.json()["detail"]
        assert httpx.get(f"{url}/ready").json()["detail"] == "not ready: no champion model loaded"

    # Redis on a port nobody listens on: the online store is down.
    down = feature_store_for(tmp_path, str(e2e.root / "lake"), online_store="redis", redis_url="127.0.0.1:1", project="churn_down")
    down.apply()
    caplog.set_level(logging.ERROR, logger="churn.service")
    with serve(e2e.resources["registry"], e2e.resources["artifacts"], down) as url:
        response = httpx.post(f"{url}/predict", json={"customer_ids": ["C00000001"]}, timeout=60)
        assert response.status_code == 503 and response.json()["detail"] == "online store unavailable"
        assert httpx.get(f"{url}/ready", timeout=60).status_code == 503
        assert "churn_online_store_errors_total 2.0" in httpx.get(f"{url}/metrics").text
    assert any("online store" in r.getMessage() for r in caplog.records)


def test_a_new_champion_is_picked_up_without_a_restart_or_a_failed_request(e2e: PipelineRun, tmp_path: Path) -> None:
    registry = _registry_copy(e2e, tmp_path)
    lgbm, torch = (e2e.metadata(k)["model_version"] for k in ("lgbm_model", "torch_model"))
    registry.promote(lgbm, actor="test", reason="start on LightGBM", run_id=None)
    ids = e2e.read("batch_predictions", [SERVED_DAY])["customer_id"].head(10).to_list()
    seen: list[tuple[int, str]] = []
    by_client: dict[int, list[str]] = {k: [] for k in range(4)}
    stop = threading.Event()

    def hammer(url: str, k: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{url}/predict", json={"customer_ids": ids})
                answer = (r.status_code, r.json().get("model_version", ""))
                seen.append(answer)
                by_client[k].append(answer[1])

    with serve(registry, e2e.resources["artifacts"], feature_store_for(e2e.root, str(e2e.root / "lake")), reload_seconds=0.2) as url:
        workers = [threading.Thread(target=hammer, args=(url, k)) for k in range(4)]
        for w in workers:
            w.start()
        time.sleep(1.0)
        registry.promote(torch, actor="test", reason="switch under load", run_id=None)
        deadline = time.time() + 20
        while not any(v == torch for _, v in seen[-5:]):
            assert time.time() < deadline, "the service never switched to the new champion"
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for w in workers:
            w.join()
        assert httpx.get(f"{url}/ready").json()["model_version"] == torch
    statuses = {s for s, _ in seen}
    versions = [v for _, v in seen]
    assert statuses == {200}, f"failed requests during the switch: {statuses}"
    assert versions[0] == lgbm and versions[-1] == torch
    # Once switched, never back: each client's next request after a torch answer is torch again. (Across clients the
    # completion order can interleave: a request that read the old model before the swap may finish after another
    # client's first torch answer, since the online read is awaited off the event loop.)
    for answers in by_client.values():
        assert torch in answers and lgbm not in answers[answers.index(torch) :], answers
    assert versions.index(torch) > 0


def test_a_tampered_artifact_is_refused_and_the_old_model_keeps_serving(e2e: PipelineRun, tmp_path: Path) -> None:
    from ml_assets_tests.conftest import register_version

    registry = _registry_copy(e2e, tmp_path)
    champion = registry.champion()
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(Path(champion.onnx_uri).read_bytes() + b"\x00")
    register_version(registry, "lgbm-tampered0001", kind="lgbm", roc_auc=0.99)
    registry.attach_onnx("lgbm-tampered0001", str(tampered), champion.onnx_sha256, run_id="test")
    # The registry only promotes a version whose ONNX passed parity: record it, as if the file had been swapped afterwards.
    registry.record_parity("lgbm-tampered0001", champion.onnx_sha256, True, {"golden": {"max_abs_diff": 0.0}}, run_id="test")
    with serve(registry, e2e.resources["artifacts"], feature_store_for(e2e.root, str(e2e.root / "lake")), reload_seconds=0.2) as url:
        registry.promote("lgbm-tampered0001", actor="test", reason="a bad artifact", run_id=None)
        time.sleep(1.5)
        response = httpx.post(f"{url}/predict", json={"customer_ids": ["C00000001"]})
        assert response.status_code == 200 and response.json()["model_version"] == champion.version
        assert httpx.get(f"{url}/ready").json()["model_version"] == champion.version
    assert registry.champion().version == "lgbm-tampered0001"  # the registry moved; the service refused to follow


def test_schemathesis_finds_no_server_error(e2e: PipelineRun, live: str) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{live}/openapi.json")
    failures: list[str] = []
    calls: list[str] = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            response = case.call(base_url=live, timeout=30)
            calls.append(case.path)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} -> {response.status_code}: {response.text[:200]}")

        check()
    assert not failures, failures
    assert {"/predict", "/health", "/ready", "/metrics"} <= set(calls) and len(calls) > 40  # it really exercised every operation


def test_shadow_scores_are_recorded_never_returned_and_the_canary_arm_is_stable(e2e: PipelineRun, tmp_path: Path) -> None:
    from lib.rollout import CANARY_ARM, arm_of
    from lib.settings import Rollout

    registry = _registry_copy(e2e, tmp_path)
    champion = registry.champion().version
    shadow = e2e.read("shadow_scores", [SERVED_DAY])
    challenger = next(v for v in shadow["model_version"].unique().to_list() if v != champion)
    registry.set_challenger(challenger, actor="test", reason="shadow and canary online")
    batch = e2e.read("batch_predictions", [SERVED_DAY]).sort("customer_id").head(60)
    ids = batch["customer_id"].to_list()
    theirs = dict(shadow.filter(pl.col("model_version") == challenger).select("customer_id", "churn_probability").iter_rows())
    ours = dict(batch.select("customer_id", "churn_probability").iter_rows())
    rollout = Rollout(canary_share=0.3, shadow=True)
    store = feature_store_for(e2e.root, str(e2e.root / "lake"))
    with serve(registry, e2e.resources["artifacts"], store, rollout) as url:
        body = httpx.post(f"{url}/predict", json={"customer_ids": ids}, headers={"x-request-id": "shadow-1"}, timeout=30).json()
        deadline = time.time() + 10
        while len([r for r in registry.predictions(limit=500) if r["request_id"] == "shadow-1"]) < 2 * len(ids):
            assert time.time() < deadline, "the shadow rows were not recorded"
            time.sleep(0.05)
    answers = {p["customer_id"]: p for p in body["predictions"]}
    canary = [c for c in ids if arm_of(c, 0.3) == CANARY_ARM]
    assert 0 < len(canary) < len(ids)
    for c in ids:
        served = answers[c]
        # The canary share is served by the challenger, everyone else by the champion; each answer says which.
        expected = (challenger, theirs[c]) if c in canary else (champion, ours[c])
        assert (served["model_version"], served["arm"] == CANARY_ARM) == (expected[0], c in canary)
        assert served["churn_probability"] == pytest.approx(expected[1], abs=1e-9)
    rows = [r for r in registry.predictions(limit=500) if r["request_id"] == "shadow-1"]
    recorded_shadow = {r["customer_id"]: r for r in rows if r["arm"] == "shadow"}
    # Every id scored in shadow by the challenger, recorded with its version, and never in the response.
    assert set(recorded_shadow) == set(ids) and {r["model_version"] for r in recorded_shadow.values()} == {challenger}
    assert all(recorded_shadow[c]["churn_probability"] == pytest.approx(theirs[c], abs=1e-9) for c in ids)
    assert "shadow" not in {p["arm"] for p in body["predictions"]} and body["model_version"] == champion
