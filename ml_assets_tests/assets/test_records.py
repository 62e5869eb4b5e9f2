"""Model records: typed through the lake, and never trusted over the registry."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from lib import records
from lib.records import Artifact, BaselineRecord, ModelRecord
from ml_assets.assets.candidates import native_artifact
from resources import ArtifactStore, Lake, ModelRegistry


def _record(ref: Artifact, version: str = "lgbm-1") -> ModelRecord:
    return ModelRecord(
        model_version=version, kind="lightgbm", format="lightgbm-text", artifact=ref, features=("recency_days", "tenure_days")
    )


def test_records_come_back_from_the_lake_as_the_class_they_were(tmp_path: Path) -> None:
    ref = Artifact(uri="/a/x.txt", sha256="a" * 64, size_bytes=3)
    model = _record(ref).model_copy(update={"metrics": {"backtest_roc_auc": 0.81}, "details": {"best_iteration": 40}})
    baseline = BaselineRecord(
        model_version="bgnbd-1",
        kind="bgnbd",
        format="bgnbd-json",
        artifact=ref,
        features=("recency_days",),
        best="bgnbd",
        best_backtest_roc_auc=0.8,
    )
    lake = Lake(root=str(tmp_path))
    for key, record in (("lgbm_model", model), ("baseline_model", baseline)):
        lake.write_bytes(lake.path_for(dg.AssetKey(key), None, ".json"), records.dump(record))
        back = lake.read_single(dg.AssetKey(key))
        assert type(back) is type(record) and back == record
    # Anything else stays a plain value; a record that breaks its schema is refused, not half-read.
    assert records.load(b'{"a": 1}') == {"a": 1}
    with pytest.raises(ValueError, match="sha256"):
        records.load(records.dump(model).replace(b"a" * 64, b"not-a-checksum"))


def test_export_takes_the_model_from_the_registry_and_refuses_a_record_that_disagrees(tmp_path: Path) -> None:
    artifacts = ArtifactStore(root=str(tmp_path / "artifacts"))
    registry = ModelRegistry(url=f"sqlite:///{tmp_path / 'registry.sqlite'}")
    trained = artifacts.put("models/lightgbm", b"tree version=v4 trained", ".txt")
    registry.register(
        version="lgbm-1",
        kind="lightgbm",
        run_id="run-1",
        data_window={},
        features=["recency_days", "tenure_days"],
        params={},
        metrics={},
        artifact_uri=trained.uri,
        artifact_sha256=trained.sha256,
    )
    assert native_artifact(_record(Artifact(**trained.as_dict())), registry, artifacts) == b"tree version=v4 trained"
    # Someone with write access to the lake swaps the record to another file: export stops instead of converting it.
    swapped = artifacts.put("models/lightgbm", b"tree version=v4 planted", ".txt")
    with pytest.raises(dg.Failure, match="the record was changed after training"):
        native_artifact(_record(Artifact(**swapped.as_dict())), registry, artifacts)
