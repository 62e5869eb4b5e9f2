"""The scoring service as a hostile client meets it: over real HTTP, against `uvicorn --factory` in a process of its own.

The server is the production entry point configured only through the
environment (CHURN_*), over a copy of the e2e run's registry (keys are created
there) and its Feast online store. Its stderr is the log: one JSON object per line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ml_assets_tests.conftest import E2E_DRIFT_DAYS, PipelineRun, feature_store_for, insert_key_behind_the_chain
from ml_assets_tests.service.test_service import _free_port, serve

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]
SERVED_DAY = E2E_DRIFT_DAYS[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path
    registry: object
    keys: dict[str, str]

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def auth(self, name: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture(scope="module")
def server(e2e: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from resources import ModelRegistry

    tmp = tmp_path_factory.mktemp("secure")
    copy = tmp / "registry.sqlite"
    shutil.copy(e2e.resources["registry"].url.removeprefix("sqlite:///"), copy)
    registry = ModelRegistry(url=f"sqlite:///{copy}")
    keys = {
        "scorer": registry.create_api_key("scorer", ["predict"], actor="test"),
        "ops": registry.create_api_key("ops", ["metrics"], actor="test"),
        "both": registry.create_api_key("both", ["predict", "metrics"], actor="test"),
        "slow": registry.create_api_key("slow", ["predict"], actor="test"),
        "doomed": registry.create_api_key("doomed", ["predict"], actor="test"),
    }
    port = _free_port()
    env = {
        **os.environ,
        "CHURN_DATA_DIR": str(e2e.root),
        "CHURN_FEAST_REPO": str(e2e.root / "feature_repo"),
        "CHURN_ARTIFACT_ROOT": str(e2e.resources["artifacts"].root),
        "CHURN_REGISTRY_URL": f"sqlite:///{copy}",
        "CHURN_SERVICE_RELOAD_SECONDS": "0.3",
        # Generous for everyone; the rate-limit test drains one key's burst on purpose.
        "CHURN_SERVICE_RATE_PER_SECOND": "2",
        "CHURN_SERVICE_RATE_BURST": "400",
    }
    env.pop("CHURN_SETTINGS_FILE", None)
    log_path = tmp / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "ml_assets.service.app:create_app", "--host", "127.0.0.1", "--port", str(port)]
            + ["--no-access-log", "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.time() < deadline, "the service did not become ready: " + log_path.read_text()[-3000:]
        time.sleep(0.2)
    yield Server(url, process, log_path, registry, keys)
    process.terminate()
    process.wait(timeout=30)


def _known(e2e: PipelineRun, n: int = 3) -> list[str]:
    return e2e.read("batch_predictions", [SERVED_DAY])["customer_id"].head(n).to_list()


def test_keys_scopes_and_open_paths(e2e: PipelineRun, server: Server) -> None:
    url, body = server.url, {"customer_ids": _known(e2e, 1)}
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/ready").status_code == 200
    for headers in (
        {},
        {"authorization": "Bearer nonsense"},
        {"authorization": server.keys["scorer"]},
        {"authorization": "Basic Zm9vOmJhcg=="},
    ):
        r = httpx.post(f"{url}/predict", json=body, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
    # A well-formed key with a wrong secret is no better than none.
    forged = server.keys["scorer"][:-4] + ("AAAA" if not server.keys["scorer"].endswith("AAAA") else "BBBB")
    assert httpx.post(f"{url}/predict", json=body, headers={"authorization": f"Bearer {forged}"}).status_code == 401
    assert httpx.post(f"{url}/predict", json=body, headers=server.auth("scorer")).status_code == 200
    assert httpx.post(f"{url}/predict", json=body, headers=server.auth("ops")).status_code == 403
    for path in ("/metrics", "/docs", "/openapi.json"):
        assert httpx.get(f"{url}{path}").status_code == 401, path
        assert httpx.get(f"{url}{path}", headers=server.auth("scorer")).status_code == 403, path
        assert httpx.get(f"{url}{path}", headers=server.auth("ops")).status_code == 200, path
    # A path that does not exist needs a key too: a scan without one learns nothing.
    assert httpx.get(f"{url}/admin").status_code == 401
    assert httpx.get(f"{url}/admin", headers=server.auth("both")).status_code == 404


def test_a_revoked_key_is_refused_within_the_reload_interval(e2e: PipelineRun, server: Server) -> None:
    body = {"customer_ids": _known(e2e, 1)}
    assert httpx.post(f"{server.url}/predict", json=body, headers=server.auth("doomed")).status_code == 200
    assert server.registry.revoke_api_key("doomed", actor="test") == 1
    time.sleep(1.0)
    assert httpx.post(f"{server.url}/predict", json=body, headers=server.auth("doomed")).status_code == 401


def test_the_rate_limit_answers_429_with_retry_after(e2e: PipelineRun, server: Server) -> None:
    body = {"customer_ids": _known(e2e, 1)}
    statuses, retry = [], None
    with httpx.Client(headers=server.auth("slow")) as client:
        for _ in range(420):
            r = client.post(f"{server.url}/predict", json=body)
            statuses.append(r.status_code)
            if r.status_code == 429:
                retry = r.headers["retry-after"]
                break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200} and len(statuses) >= 400
    assert retry is not None and int(retry) >= 1
    # Another key is not affected.
    assert httpx.post(f"{server.url}/predict", json=body, headers=server.auth("scorer")).status_code == 200


def test_a_chunked_20_mb_body_is_refused_at_the_limit_without_growing_the_server(server: Server) -> None:
    before = server.rss_kb()
    host, port = server.url.removeprefix("http://").split(":")
    sent = 0
    chunk = b"A" * 65536
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            + f"Authorization: Bearer {server.keys['both']}\r\n\r\n".encode()
        )
        try:
            while sent < 20 * 2**20:
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: it stopped reading
        response = b""
        try:
            while data := s.recv(65536):
                response += data
        except OSError:
            pass
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert len(response) < 2000  # the refusal does not echo the body
    grown_mb = (server.rss_kb() - before) / 1024
    assert grown_mb < 5, f"server memory grew by {grown_mb:.1f} MB"


def test_bad_json_gets_422_naming_the_field_and_echoing_nothing(server: Server) -> None:
    url, headers = server.url, {**server.auth("both"), "content-type": "application/json"}
    for raw, field in (
        (b'{"customer_ids": NaN}', "customer_ids"),
        (b'{"customer_ids": ["C1", Infinity]}', "customer_ids[1]"),
        (b'{"customer_ids": ["C1"], "x": -Infinity}', "x"),
        (b'{"customer_ids": ["\xff\xfe"]}', "body"),
        (b'{"customer_ids": ', "body"),
        (b'{"customer_ids": 1e999}', "customer_ids"),  # a number that overflows to infinity
        (b"[" * 60_000 + b"]" * 60_000, "body"),  # nesting deeper than any parser's stack
        (b'{"n": ' + b"7" * 10_000 + b"}", "body"),  # an integer over Python's digit limit
    ):
        r = httpx.post(f"{url}/predict", content=raw, headers=headers)
        assert r.status_code == 422 and r.json()["field"] == field, (raw, r.text)
    big = b'{"customer_ids": ["' + b"Z" * 200_000 + b'"]}'
    r = httpx.post(f"{url}/predict", content=big, headers=headers)
    assert r.status_code == 422 and len(r.content) < 2000 and "ZZZZ" not in r.text
    many = httpx.post(f"{url}/predict", json={"customer_ids": ["C1"] * 1001}, headers=headers)
    assert many.status_code == 413 and many.json()["limit"] == 1000


def test_request_ids_are_validated_or_replaced(e2e: PipelineRun, server: Server) -> None:
    body, auth = {"customer_ids": _known(e2e, 1)}, server.auth("both")
    assert (
        httpx.post(f"{server.url}/predict", json=body, headers={**auth, "x-request-id": "trace-1.a_b"}).headers["x-request-id"]
        == "trace-1.a_b"
    )
    for given in ("has space", "x" * 65, 'quote"d', "new\u2028line"):
        rid = httpx.post(f"{server.url}/predict", json=body, headers={**auth, "x-request-id": given.encode("utf-8")}).headers[
            "x-request-id"
        ]
        assert rid != given and len(rid) == 32 and rid.isalnum(), given


def test_a_crlf_path_yields_exactly_one_log_line_and_keys_are_never_logged(server: Server) -> None:
    before = len(server.log_lines())
    host, port = server.url.removeprefix("http://").split(":")
    forged = "/predict%0D%0A2099-01-01 INFO request_id=FORGED status=200"
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST {forged.replace(' ', '%20')} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        while s.recv(65536):
            pass
    deadline = time.time() + 5
    while len(server.log_lines()) == before and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    new = server.log_lines()[before:]
    assert len(new) == 1, new
    line = json.loads(new[0])
    assert line["path"].startswith("/predict\r\n2099-01-01") and line["status"] == 401
    text = server.log_path.read_text()
    assert not any(key in text for key in server.keys.values())
    assert all(json.loads(x) for x in server.log_lines() if x.startswith("{"))


def test_every_prediction_is_recorded_with_key_and_model(e2e: PipelineRun, server: Server) -> None:
    ids = [*_known(e2e, 3), "C99999999"]
    r = httpx.post(f"{server.url}/predict", json={"customer_ids": ids}, headers={**server.auth("scorer"), "x-request-id": "record-me"})
    assert r.status_code == 200
    deadline = time.time() + 5
    while len(rows := [p for p in server.registry.predictions(limit=5000) if p["request_id"] == "record-me"]) < 4:
        assert time.time() < deadline, rows
        time.sleep(0.1)
    by_id = {p["customer_id"]: p for p in rows}
    assert set(by_id) == set(ids)
    for p in r.json()["predictions"]:
        row = by_id[p["customer_id"]]
        assert (row["status"], row["key_name"], row["model_version"]) == (p["status"], "scorer", r.json()["model_version"])
        assert row["churn_probability"] == p["churn_probability"]


def test_an_erased_customer_is_neither_scored_nor_recorded_again(e2e: PipelineRun, server: Server) -> None:
    """After `churn erase`, a request naming the id gets the unknown-customer answer and leaves no trace of the id."""
    # Ids no other test of this module asks for (they take the first few): the server and its prediction record are
    # shared, and a row recorded before the erasure is `churn erase`'s to remove, which this test does not run.
    gone, kept = e2e.read("batch_predictions", [SERVED_DAY])["customer_id"].tail(2).to_list()
    assert server.registry.predictions(customer_id=gone) == []
    server.registry.record_erasure(gone, actor="test", reason="asked to be forgotten", removed={})
    time.sleep(1.0)  # the service reloads erased ids with the champion (0.3 s here)
    r = httpx.post(
        f"{server.url}/predict", json={"customer_ids": [gone, kept]}, headers={**server.auth("scorer"), "x-request-id": "after-erase"}
    )
    assert r.status_code == 200
    assert [(p["customer_id"], p["status"]) for p in r.json()["predictions"]] == [(gone, 404), (kept, 200)]
    assert r.json()["predictions"][0]["error"] == "unknown customer: no features in the online store"
    deadline = time.time() + 5
    while not [p for p in server.registry.predictions(limit=5000) if p["request_id"] == "after-erase"]:
        assert time.time() < deadline
        time.sleep(0.1)
    time.sleep(0.5)  # shadow rows are written after the served ones
    assert server.registry.predictions(customer_id=gone) == []
    assert gone not in "".join(server.log_lines())


def test_what_the_chain_does_not_prove_is_refused_and_alerted(e2e: PipelineRun, server: Server) -> None:
    """Runs last against this server: a key inserted and a champion switched in the tables, behind the chain's back."""
    registry, body = server.registry, {"customer_ids": _known(e2e, 1)}
    serving = httpx.post(f"{server.url}/predict", json=body, headers=server.auth("scorer")).json()["model_version"]
    forged = insert_key_behind_the_chain(registry)
    with registry.engine.begin() as conn:
        other = next(v.version for v in registry.versions() if v.version != serving and v.onnx_sha256)
        versions = registry._t.versions
        conn.execute(versions.update().where(versions.c.version == serving).values(status="archived"))
        conn.execute(versions.update().where(versions.c.version == other).values(status="champion"))
    time.sleep(1.5)
    assert httpx.post(f"{server.url}/predict", json=body, headers={"authorization": f"Bearer {forged.token}"}).status_code == 401
    r = httpx.post(f"{server.url}/predict", json=body, headers=server.auth("scorer"))
    assert r.status_code == 200 and r.json()["model_version"] == serving, "the switched champion must not be served"
    alerts = list((Path(e2e.resources["artifacts"].root) / "alerts" / "chain_mismatch").glob("*.json"))
    texts = [json.loads(a.read_text()) for a in alerts]
    assert any(f"api_keys row {forged.key_id} (mallory) is not in the chain" in " ".join(t["problems"]) for t in texts), texts
    assert any(f"the champion is {other} in model_versions, {serving} in the chain" in " ".join(t["problems"]) for t in texts), texts
    assert any("disagrees with its hash chain" in line for line in server.log_lines())


def test_a_clean_shutdown_loses_no_prediction_record(e2e: PipelineRun, tmp_path: Path) -> None:
    from resources import ModelRegistry

    copy = tmp_path / "registry.sqlite"
    shutil.copy(e2e.resources["registry"].url.removeprefix("sqlite:///"), copy)
    registry = ModelRegistry(url=f"sqlite:///{copy}")
    ids = _known(e2e, 5)
    store = feature_store_for(e2e.root, str(e2e.root / "lake"))
    with serve(registry, e2e.resources["artifacts"], store, record_predictions=True) as url, httpx.Client() as client:
        for i in range(60):
            assert client.post(f"{url}/predict", json={"customer_ids": ids}, headers={"x-request-id": f"shutdown-{i}"}).status_code == 200
    # The server has stopped: whatever was waiting in memory was written on the way out.
    recorded = [p for p in registry.predictions(limit=10_000) if p["request_id"].startswith("shutdown-") and p["arm"] != "shadow"]
    assert len(recorded) == 60 * len(ids)
    # The challenger's shadow scores, made on the recorder's thread after each answer, are drained too.
    shadow = [p for p in registry.predictions(limit=10_000) if p["request_id"].startswith("shutdown-") and p["arm"] == "shadow"]
    assert len(shadow) == 60 * len(ids) * len(registry.challengers())


def test_a_stalled_redis_gives_503_within_2_s_while_health_answers(e2e: PipelineRun, tmp_path: Path) -> None:
    # A "Redis" that accepts connections and never says a word, like one behind a dead link.
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    stalled = feature_store_for(
        tmp_path, str(e2e.root / "lake"), online_store="redis", redis_url=f"127.0.0.1:{listener.getsockname()[1]}", project="churn_stall"
    )
    stalled.apply()
    try:
        with serve(e2e.resources["registry"], e2e.resources["artifacts"], stalled) as url:
            results: dict[str, tuple[int, float]] = {}

            def call(name: str, method: str, path: str, **kw: object) -> None:
                t0 = time.perf_counter()
                r = httpx.request(method, f"{url}{path}", timeout=30, **kw)
                results[name] = (r.status_code, time.perf_counter() - t0)

            predict = threading.Thread(target=call, args=("predict", "POST", "/predict"), kwargs={"json": {"customer_ids": ["C1"]}})
            predict.start()
            time.sleep(0.2)
            health = [threading.Thread(target=call, args=(f"health{i}", "GET", "/health")) for i in range(3)]
            for h in health:
                h.start()
            for h in health:
                h.join()
            predict.join()
            ready = httpx.get(f"{url}/ready", timeout=30)
        assert results["predict"][0] == 503 and results["predict"][1] < 2.0, results
        assert all(results[f"health{i}"][0] == 200 and results[f"health{i}"][1] < 0.5 for i in range(3)), results
        assert ready.status_code == 503 and ready.json()["detail"] == "not ready: online store unavailable"
        assert "127.0.0.1" not in ready.text
    finally:
        listener.close()
        for s in held:
            s.close()
