"""The paths a user takes from a shell: the generator CLI and `dagster asset materialize`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(home), "CHURN_DATA_DIR": str(tmp_path / "data"), "PYTHONWARNINGS": "ignore"}


def test_generate_then_dagster_asset_materialize(tmp_path: Path, monkeypatch) -> None:
    env = _env(tmp_path)
    gen = subprocess.run(
        [str(BIN / "churn"), "generate", "--start", "2024-07-01", "--end", "2024-07-10", "--customers", "300", "--replace"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gen.returncode == 0, gen.stderr
    assert "generated" in gen.stdout

    run = subprocess.run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "ml_assets.definitions",
            "--select",
            "raw_transactions,validated_transactions,quarantined_transactions",
            "--partition-range",
            "2024-07-02...2024-07-04",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    lake = tmp_path / "data" / "lake"
    for day in ("2024-07-02", "2024-07-03", "2024-07-04"):
        raw = pl.read_parquet(lake / "raw_transactions" / f"{day}.parquet")
        valid = pl.read_parquet(lake / "validated_transactions" / f"{day}.parquet")
        quarantined = pl.read_parquet(lake / "quarantined_transactions" / f"{day}.parquet")
        assert raw.height == valid.height + quarantined.height > 0
        assert (raw["ts"].dt.date().cast(pl.String) == day).all()
    assert not (lake / "raw_transactions" / "2024-07-05.parquet").exists()

    # The run is recorded in the instance the UI reads (dagster.yaml's storage, relative to the working directory).
    monkeypatch.chdir(tmp_path)
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        assert instance.get_materialized_partitions(dg.AssetKey("validated_transactions")) == {"2024-07-02", "2024-07-03", "2024-07-04"}
    finally:
        instance.dispose()


def test_generate_rejects_a_bad_date(tmp_path: Path) -> None:
    res = subprocess.run([str(BIN / "churn"), "generate", "--start", "yesterday"], env=_env(tmp_path), capture_output=True, text=True)
    assert res.returncode == 2
    assert "YYYY-MM-DD" in res.stderr


def test_registry_command_lists_versions_and_decisions(tmp_path: Path) -> None:
    from ml_assets_tests.conftest import register_version
    from resources import ModelRegistry

    env = _env(tmp_path)
    empty = subprocess.run([str(BIN / "churn"), "registry"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert empty.returncode == 0 and "empty" in empty.stdout

    registry = ModelRegistry(url=f"sqlite:///{tmp_path / 'data' / 'registry.sqlite'}")
    for version in ("lgbm-000000000001", "torch-000000000002"):
        register_version(registry, version, roc_auc=0.91)
    registry.promote("torch-000000000002", actor="bob", reason="hand-picked for the test", run_id="r")
    out = subprocess.run([str(BIN / "churn"), "registry"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("torch-000000000002") and "champion" in line and "passed" in line for line in lines)
    assert any(line.startswith("lgbm-000000000001") and "candidate" in line for line in lines)
    assert "promoted     torch-000000000002   by bob: hand-picked for the test" in out.stdout
    assert "model card of the champion torch-000000000002: not written yet" in out.stdout


def test_artifact_sweep_lists_then_removes_only_old_unregistered_files(tmp_path: Path) -> None:
    from resources import ArtifactStore, ModelRegistry

    env = _env(tmp_path)
    store = ArtifactStore(root=str(tmp_path / "data" / "artifacts"))
    registry = ModelRegistry(url=f"sqlite:///{tmp_path / 'data' / 'registry.sqlite'}")
    model, onnx = store.put("models/lgbm", b"tree 1", ".txt"), store.put("models/onnx", b"onnx 1", ".onnx")
    registry.register(
        version="lgbm-000000000001", kind="lightgbm", run_id="r1", data_window={}, features=["recency_days"], params={},
        metrics={"roc_auc": 0.9}, artifact_uri=model.uri, artifact_sha256=model.sha256, code_version="abc",
    )  # fmt: skip
    registry.attach_onnx("lgbm-000000000001", onnx.uri, onnx.sha256, "r1")
    # What a killed run leaves: an ONNX file whose registry row never committed, and a half-written temp file.
    orphan = Path(store.put("models/onnx", b"onnx of a killed run", ".onnx").uri)
    half = orphan.parent / ".deadbeef.onnx.0123.tmp"
    half.write_bytes(b"onnx of a")
    two_days_ago = time.time() - 48 * 3600
    for path in (orphan, half, Path(model.uri), Path(onnx.uri)):
        os.utime(path, (two_days_ago, two_days_ago))
    # A running training's fresh, not yet registered file: too young to touch.
    young = Path(store.put("models/torch", b"fresh weights", ".safetensors").uri)

    def sweep(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "churn"), "artifacts", "sweep", *extra], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    dry = sweep()
    assert dry.returncode == 0, dry.stderr
    assert f"would remove: {orphan}" in dry.stdout and f"would remove: {half}" in dry.stdout
    assert "would remove 2 file(s)" in dry.stdout and "--apply" in dry.stdout
    assert orphan.exists() and half.exists()  # a dry run deletes nothing

    applied = sweep("--apply")
    assert applied.returncode == 0, applied.stderr
    assert "removed 2 file(s)" in applied.stdout
    assert not orphan.exists() and not half.exists() and young.exists()
    # What the registry points to is untouched and still verifies.
    assert store.get(model.uri, model.sha256) == b"tree 1" and store.get(onnx.uri, onnx.sha256) == b"onnx 1"
    assert "would remove 0 file(s)" in sweep().stdout


def test_apikey_and_registry_verify_commands(tmp_path: Path) -> None:
    import getpass

    from lib.governance import parse_token
    from ml_assets_tests.conftest import register_stored
    from resources import ArtifactStore, ModelRegistry

    env = _env(tmp_path)

    def churn(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "churn"), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    created = churn("apikey", "create", "partner-a", "--scope", "predict", "--scope", "metrics")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert parse_token(token) is not None and "shown once" in created.stderr
    listed = churn("apikey", "list")
    assert "partner-a" in listed.stdout and "predict,metrics" in listed.stdout and "active" in listed.stdout
    assert token not in listed.stdout and parse_token(token)[1] not in listed.stdout
    assert churn("apikey", "create", "partner-a").returncode == 2  # one active key per name
    assert churn("apikey", "revoke", "partner-a").returncode == 0
    assert "revoked" in churn("apikey", "list").stdout
    assert churn("apikey", "revoke", "partner-a").returncode == 1

    registry = ModelRegistry(url=f"sqlite:///{tmp_path / 'data' / 'registry.sqlite'}")
    # Key changes are registry events, by the OS account that ran the command (not a name anyone can type).
    created_event = next(e for e in registry.events(10) if e["action"] == "apikey_created")
    assert created_event["actor"].startswith(f"os:{getpass.getuser()}(uid {os.geteuid()})")
    model = register_stored(registry, ArtifactStore(root=str(tmp_path / "data" / "artifacts")), "lgbm-000000000009", b"tree 1")
    ok = churn("registry", "verify")
    assert ok.returncode == 0 and "OK" in ok.stdout and "events chained unbroken" in ok.stdout, ok.stdout + ok.stderr
    assert "unkeyed chain: set CHURN_CHAIN_KEY" in ok.stdout
    # With the chain key and an anchor (set from here on): one chain_keyed event, and verify says what it checked.
    env.update(CHURN_CHAIN_KEY="the-deployment's-chain-key", CHURN_CHAIN_ANCHOR=str(tmp_path / "anchor"))
    keyed = churn("registry", "verify")
    assert keyed.returncode == 0 and "carries a valid MAC" in keyed.stdout and "agrees with the anchor" in keyed.stdout, keyed.stdout
    Path(model.uri).write_bytes(b"tree 2")
    bad = churn("registry", "verify")
    assert bad.returncode == 1 and "FAILED: lgbm-000000000009 native artifact" in bad.stdout
    # A key row inserted behind the chain's back is named by verify.
    with registry.engine.begin() as conn:
        conn.execute(registry._t.api_keys.update().values(revoked_at=None))
    revived = churn("registry", "verify")
    assert revived.returncode == 1 and "active in the table, revoked in the chain" in revived.stdout, revived.stdout


def test_retention_lists_then_deletes_old_transaction_partitions_and_prediction_records(tmp_path: Path) -> None:
    import datetime as dt

    from resources import ModelRegistry

    env = {**_env(tmp_path), "CHURN_RETENTION_DAYS": "30"}
    lake = tmp_path / "data" / "lake"
    today = dt.datetime.now(dt.UTC).date()
    old, recent = (today - dt.timedelta(days=90)).isoformat(), (today - dt.timedelta(days=3)).isoformat()
    for table in ("raw_transactions", "validated_transactions", "quarantined_transactions", "customer_features"):
        (lake / table).mkdir(parents=True)
        for day in (old, recent):
            pl.DataFrame({"customer_id": ["A"]}).write_parquet(lake / table / f"{day}.parquet")
    registry = ModelRegistry(url=f"sqlite:///{tmp_path / 'data' / 'registry.sqlite'}")
    now = dt.datetime.now(dt.UTC)
    registry.record_predictions(
        [
            {
                "at": at,
                "request_id": "r",
                "key_name": None,
                "customer_id": "A",
                "status": 200,
                "churn_probability": 0.1,
                "model_version": "v",
            }
            for at in (now, now - dt.timedelta(days=500))
        ]
    )

    def churn(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "churn"), "retention", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    listed = churn()
    assert listed.returncode == 0 and "would delete 3 " in listed.stdout and "--apply" in listed.stdout
    assert (lake / "raw_transactions" / f"{old}.parquet").exists()
    applied = churn("--apply")
    assert applied.returncode == 0 and "deleted 3 " in applied.stdout and "deleted 1 prediction record" in applied.stdout
    for table in ("raw_transactions", "validated_transactions", "quarantined_transactions"):
        assert sorted(p.stem for p in (lake / table).iterdir()) == [recent]
    assert len(list((lake / "customer_features").iterdir())) == 2  # derived tables are not retention's
    assert len(registry.predictions()) == 1
