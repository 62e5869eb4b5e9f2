"""The lake and the artifacts on object storage, through the same s3:// URLs the Helm values use, against a real S3 API.

The S3 server is moto in server mode on 127.0.0.1 (the `s3_server` fixture): every request is real HTTP through
s3fs/botocore, as in a cluster; only the far end is a local process.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from lib import records
from ml_assets_tests.conftest import S3Server
from resources import ArtifactIntegrityError, ArtifactStore, Lake


def test_lake_and_artifacts_round_trip_on_s3(s3: S3Server) -> None:
    bucket = s3.bucket()
    lake = Lake(root=f"s3://{bucket}/lake")
    key = dg.AssetKey("customer_features")
    frame = pl.DataFrame({"customer_id": ["a", "b"], "snapshot_date": [dt.date(2025, 1, 1)] * 2, "recency_days": [1.0, 2.0]})
    lake.write_parquet(lake.path_for(key, "2025-01-01", ".parquet"), frame)
    assert lake.existing_partitions(key) == ["2025-01-01"]
    assert lake.read_partitions(key, ["2025-01-01"]).equals(frame)
    record = records.ModelRecord(
        model_version="lgbm-1",
        kind="lightgbm",
        format="lightgbm-text",
        features=("recency_days",),
        artifact=records.Artifact(uri=f"s3://{bucket}/artifacts/x.txt", sha256="a" * 64, size_bytes=1),
    )
    lake.write_bytes(lake.path_for(dg.AssetKey("lgbm_model"), None, ".json"), records.dump(record))
    assert lake.read_single(dg.AssetKey("lgbm_model")) == record
    # No temporary file is left beside the objects (the write goes to a temporary name, then is renamed).
    assert sorted(s3.keys(bucket)) == ["lake/customer_features/2025-01-01.parquet", "lake/lgbm_model.json"]

    store = ArtifactStore(root=f"s3://{bucket}/artifacts")
    ref = store.put("models/lightgbm", b"tree model", ".txt")
    assert ref.uri.startswith(f"s3://{bucket}/artifacts/models/lightgbm/") and store.get(ref.uri, ref.sha256) == b"tree model"
    s3.put(bucket, ref.uri.split(f"s3://{bucket}/", 1)[1], b"planted")
    with pytest.raises(ArtifactIntegrityError, match="refusing to load it"):
        store.get(ref.uri, ref.sha256)
    # Named reports: written, listed and removed on the bucket as on a disk (the latest quiet day's folder).
    assert store.list_named("drift_reports/latest") == []
    store.put_named("drift_reports/latest", "2025-01-02.html", b"<html>")
    assert store.list_named("drift_reports/latest") == ["2025-01-02.html"]
    assert store.remove_named("drift_reports/latest", "2025-01-02.html") and not store.remove_named(
        "drift_reports/latest", "2025-01-02.html"
    )
    assert store.list_named("drift_reports/latest") == []


def test_erasure_and_retention_on_an_s3_lake(s3: S3Server) -> None:
    from ml_assets.governance.erasure import erase_from_lake, expire_lake

    bucket = s3.bucket()
    lake = Lake(root=f"s3://{bucket}/lake")
    today = dt.date(2026, 6, 1)
    for table, day in (("raw_transactions", "2026-01-01"), ("raw_transactions", "2026-05-30"), ("customer_features", "2026-05-30")):
        frame = pl.DataFrame({"customer_id": ["gone", "stays", "gone"], "x": [1, 2, 3]})
        lake.write_parquet(lake.path_for(dg.AssetKey(table), day, ".parquet"), frame)
    files, by_table = erase_from_lake(lake.root, "gone")
    assert files == 3 and by_table == {"raw_transactions": 4, "customer_features": 2}
    assert lake.read_partitions(dg.AssetKey("raw_transactions"), ["2026-05-30"])["customer_id"].to_list() == ["stays"]
    assert expire_lake(lake.root, 30, today, apply=False) == [
        ("raw_transactions", "2026-01-01", f"s3://{bucket}/lake/raw_transactions/2026-01-01.parquet")
    ]
    expire_lake(lake.root, 30, today, apply=True)
    assert sorted(s3.keys(bucket)) == ["lake/customer_features/2026-05-30.parquet", "lake/raw_transactions/2026-05-30.parquet"]


def test_the_registry_chain_is_anchored_in_a_bucket(s3: S3Server, tmp_path) -> None:
    """The anchor on object storage: one object per event, never overwritten, read back by verify."""
    from ml_assets_tests.conftest import register_version
    from resources import ModelRegistry

    bucket = s3.bucket()
    anchor = f"s3://{bucket}/registry-anchor"
    registry = ModelRegistry(url=f"sqlite:///{tmp_path / 'registry.sqlite'}", chain_anchor=anchor)
    register_version(registry, "lgbm-000000000001")
    registry.promote("lgbm-000000000001", actor="test", reason="first", run_id="r")
    events, _ = registry.chain()
    assert sorted(s3.keys(bucket)) == [f"registry-anchor/{e['seq']:012d}.json" for e in events]
    assert registry.verify(None) == []
    # A chain rebuilt behind the registry's back cannot overwrite what the bucket holds.
    s3.put(bucket, "registry-anchor/000000000001.json", b'{"seq": 1, "hash": "' + b"f" * 64 + b'"}')
    assert any("event 1: its hash differs from the anchor" in p for p in registry.verify(None))
