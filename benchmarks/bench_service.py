"""Online scoring service under load: latency and throughput over loopback HTTP, SQLite and Redis online stores.

Setup (self-contained, in a temporary folder): a snapshot of N customers in
the lake, loaded into the Feast online store; a 300-tree LightGBM model on
the 20 features, exported to ONNX and promoted in a fresh registry. The
service runs as its own process (`uvicorn --factory
ml_assets.service.app:create_app`, configured by environment as `make serve`
is); the load comes from a second process with one keep-alive connection
(closed loop: latency per request) and then 4 connections (throughput).

Baseline in the same run: the same work called directly in one process
(Feast online read + onnxruntime), so the ratio is what HTTP and the service add.

    python -m benchmarks.bench_service [--quick] [--requests N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine

CLIENT = r"""
import json, sys, time, threading
import httpx
url, mode, n, ids, conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
headers = {"authorization": "Bearer " + sys.argv[6]}
def body(i):
    if mode == "batch100":
        return {"customer_ids": [ids[(i + k) % len(ids)] for k in range(100)]}
    return {"customer_ids": [ids[i % len(ids)]], **({"explain": True} if mode == "explain" else {})}
lat, errors = [], []
def worker(k):
    with httpx.Client(timeout=30, headers=headers) as c:
        for i in range(k, n, conns):
            t = time.perf_counter()
            r = c.post(url + "/predict", json=body(i))
            lat.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors.append(r.status_code)
with httpx.Client(headers=headers) as c:
    for i in range(50):
        c.post(url + "/predict", json=body(i))
t0 = time.perf_counter()
threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
[t.start() for t in threads]; [t.join() for t in threads]
wall = time.perf_counter() - t0
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(json.dumps({"p50_ms": q(0.5) * 1e3, "p99_ms": q(0.99) * 1e3, "rps": n / wall, "errors": len(errors)}))
"""


def _setup(root: Path, customers: int) -> tuple[list[str], str]:
    import numpy as np
    import polars as pl

    from lib.features import FEATURE_COLUMNS, cutoff_for
    from resources import ArtifactStore, ModelRegistry

    day = dt.date(2025, 6, 1)
    ids = [f"C{i:08d}" for i in range(customers)]
    rng = np.random.default_rng(3)
    x = rng.random((customers, len(FEATURE_COLUMNS)))
    folder = root / "lake" / "customer_features"
    folder.mkdir(parents=True)
    pl.DataFrame(
        {
            "customer_id": ids,
            "snapshot_date": [day] * customers,
            **{c: x[:, i] for i, c in enumerate(FEATURE_COLUMNS)},
            "feature_timestamp": [cutoff_for(day)] * customers,
            "last_tx_ts": [cutoff_for(day)] * customers,
        },
        schema_overrides={"feature_timestamp": pl.Datetime("us"), "last_tx_ts": pl.Datetime("us")},
    ).write_parquet(folder / f"{day}.parquet")

    import lightgbm as lgb

    y = (x[:, 0] + 0.3 * rng.random(customers) > 0.6).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 31, "verbose": -1}, lgb.Dataset(x, y, feature_name=list(FEATURE_COLUMNS)), 300
    )
    artifacts = ArtifactStore(root=str(root / "artifacts"))
    registry = ModelRegistry(url=f"sqlite:///{root / 'registry.sqlite'}")
    registry.promote(_register(booster, artifacts, registry), actor="bench", reason="benchmark", run_id=None)
    # A challenger (another 300-tree model) for the shadow and canary rows: scored beside the champion, recorded only.
    other = lgb.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 5}, lgb.Dataset(x, y, feature_name=list(FEATURE_COLUMNS)), 300
    )
    registry.set_challenger(_register(other, artifacts, registry), actor="bench", reason="shadow scoring benchmark")
    return ids, registry.create_api_key("bench", ["predict"], actor="bench")


def _register(booster: Any, artifacts: Any, registry: Any) -> str:
    """A LightGBM version with its ONNX graph and a passed parity record, as training would leave it; its name."""
    from lib.export import lgbm_to_onnx
    from lib.features import FEATURE_COLUMNS

    text = booster.model_to_string()
    native = artifacts.put("models/lgbm", text.encode(), ".txt")
    graph = artifacts.put("onnx/lgbm", lgbm_to_onnx(text, len(FEATURE_COLUMNS)), ".onnx")
    version = f"lgbm-{native.sha256[:12]}"
    registry.register(
        version=version,
        kind="lightgbm",
        run_id="bench",
        data_window={},
        features=list(FEATURE_COLUMNS),
        params={},
        metrics={"roc_auc": 0.9},
        artifact_uri=native.uri,
        artifact_sha256=native.sha256,
    )
    registry.attach_onnx(version, graph.uri, graph.sha256, run_id="bench")
    registry.record_parity(version, graph.sha256, True, {"bench": {"max_abs_diff": 0.0}}, run_id="bench")
    return version


def _env(root: Path, redis: bool) -> dict[str, str]:
    env = {
        **os.environ,
        "CHURN_DATA_DIR": str(root / ("redis" if redis else "sqlite")),
        "CHURN_LAKE_ROOT": str(root / "lake"),
        "CHURN_ARTIFACT_ROOT": str(root / "artifacts"),
        "CHURN_REGISTRY_URL": f"sqlite:///{root / 'registry.sqlite'}",
        "CHURN_FEAST_REPO": str(root / ("repo-redis" if redis else "repo-sqlite")),
        "CHURN_FEAST_PROJECT": "churn_bench",
    }
    env.pop("CHURN_FEAST_REDIS_URL", None)
    if redis:
        env["CHURN_FEAST_REDIS_URL"] = "127.0.0.1:6379"
    return env


def _store(env: dict[str, str]):
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from resources import build_feature_store

        return build_feature_store(env["CHURN_LAKE_ROOT"], resolve_env=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)


REQUEST = {"single": "1 id", "explain": "1 id, explain", "batch100": "100 ids"}


def _direct(root: Path, store, ids: list[str], n: int, batch: int, explain: bool = False) -> dict[str, float]:
    import numpy as np

    from lib.explain import explain as explain_rows
    from lib.explain import top_reasons
    from lib.export import onnx_churn_probability, onnx_session
    from lib.features import FEATURE_COLUMNS
    from ml_assets.champion import explain_spec
    from resources import ArtifactStore, ModelRegistry

    champion = ModelRegistry(url=f"sqlite:///{root / 'registry.sqlite'}").champion()
    artifacts = ArtifactStore(root=str(root / "artifacts"))
    session = onnx_session(artifacts.get(champion.onnx_uri, champion.onnx_sha256))
    spec = explain_spec(champion, artifacts) if explain else None
    lat = []
    for i in range(n):
        chosen = [ids[(i + k) % len(ids)] for k in range(batch)]
        t = time.perf_counter()
        served = store.online_dict(chosen)  # what the service does per request, minus HTTP
        matrix = np.array([served[f] for f in FEATURE_COLUMNS], dtype=np.float32).T
        onnx_churn_probability(session, matrix, workers=1)
        if spec is not None:
            top_reasons(explain_rows(spec, matrix).contributions, spec.features)
        lat.append(time.perf_counter() - t)
    lat.sort()
    return {"p50_ms": lat[len(lat) // 2] * 1e3, "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3, "rps": n / sum(lat)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_up() -> bool:
    from resources.feature_store import tcp_reachable

    return tcp_reachable("127.0.0.1", 6379)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=2_000)
    args = parser.parse_args(argv)
    n = 100 if args.quick else args.requests
    root = Path(tempfile.mkdtemp(prefix="bench-service-"))
    lines = [
        "",
        "### Online scoring service (loopback HTTP, server and client in separate processes)",
        "",
        "| online store | service | request | direct p50 / p99 ms | service p50 / p99 ms | service vs direct (p50) "
        "| 1 connection req/s | 4 connections req/s | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    try:
        ids, key = _setup(root, 2_000 if args.quick else 100_000)
        # The production default (API key checked, every prediction recorded) beside the bare service,
        # on SQLite; Redis with the default. The rate limit is lifted: the load is one trusted client.
        # Shadow scoring (a challenger scored on the recorder's thread, never returned) and a 10 % canary beside the
        # same service without them: the cost of safe rollout on the request's latency.
        unlimited = {"CHURN_SERVICE_RATE_PER_SECOND": "1000000", "CHURN_SERVICE_RATE_BURST": "1000000", "CHURN_SHADOW_SCORING": "false"}
        shadow = {**unlimited, "CHURN_SHADOW_SCORING": "true"}
        canary = {**shadow, "CHURN_CANARY_SHARE": "0.1"}
        bare = {**unlimited, "CHURN_SERVICE_REQUIRE_API_KEY": "false", "CHURN_SERVICE_RECORD_PREDICTIONS": "false"}
        variants = [
            (False, "key + record", unlimited),
            (False, "key + record + shadow", shadow),
            (False, "+ shadow + 10 % canary", canary),
            (False, "open, no record", bare),
        ]
        if _redis_up():
            variants.append((True, "key + record", unlimited))
        if args.quick:  # the smoke run: the default service (with explain) and the canary, on SQLite
            variants = [variants[0], variants[2]]
        applied: set[bool] = set()
        for redis, label, extra in variants:
            env = {**_env(root, redis), **extra}
            store = _store(env)
            if redis not in applied:
                store.apply()
                at = dt.datetime(2025, 6, 2)
                store.materialize(at - dt.timedelta(hours=12), at + dt.timedelta(hours=12))
                applied.add(redis)
            port = _free_port()
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "ml_assets.service.app:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                env={**env, "PYTHONWARNINGS": "ignore"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                import httpx

                deadline = time.time() + 60
                while True:
                    try:
                        if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.time() > deadline:
                        raise RuntimeError("the service did not become ready")
                    time.sleep(0.2)
                sample = json.dumps(ids[: min(len(ids), 5_000)])
                # With explain (the three reasons, TreeSHAP of the 300-tree model) for one id, on the default service.
                explained = [("explain", 1, n)] if label == "key + record" else []
                for mode, batch, count in (("single", 1, n), *explained, ("batch100", 100, max(20, n // 10))):
                    direct = _direct(root, store, ids, count, batch, explain=mode == "explain")
                    one, four = (
                        json.loads(
                            subprocess.run(
                                [sys.executable, "-c", CLIENT, url, mode, str(count), sample, str(conns), key],
                                capture_output=True,
                                text=True,
                                check=True,
                            )
                            .stdout.strip()
                            .splitlines()[-1]
                        )
                        for conns in (1, 4)
                    )
                    lines.append(
                        f"| {'redis' if redis else 'sqlite'} | {label} | {REQUEST[mode]} | {direct['p50_ms']:.2f} / {direct['p99_ms']:.2f} "
                        f"| {one['p50_ms']:.2f} / {one['p99_ms']:.2f} | {one['p50_ms'] / direct['p50_ms']:.2f}x | {one['rps']:.0f} | {four['rps']:.0f} "
                        f"| {one['errors'] + four['errors']} |"
                    )
            finally:
                server.terminate()
                server.wait(timeout=10)
                if redis and (redis, label) == (variants[-1][0], variants[-1][1]):
                    store.store().teardown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = "\n".join(lines) + f"\n\n{n} single-id requests, {max(20, n // 10)} 100-id requests per row; {machine()}"
    print(out)
    return out


if __name__ == "__main__":
    main()
