"""Scoring one request: the served feature values through the champion's ONNX session, one answer per id."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from ml_assets.service.schemas import Prediction

if TYPE_CHECKING:
    from ml_assets.champion import Champion


def answers(model: Champion, ids: list[str], unique: list[str], served: dict[str, list[Any]]) -> list[Prediction]:
    """One prediction per requested id, in request order: 200 with the score, or 404 for an id the store does not know.

    ``served`` is Feast's answer for ``unique`` (request order, one value per id
    and feature, None where it does not know the id).
    """
    import numpy as np

    from lib.export import onnx_churn_probability

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
    return out


def record_rows(out: list[Prediction], rid: str, key_name: str | None, version: str) -> list[dict[str, Any]]:
    """The prediction record's rows for one answered request (who asked, which model, what it said)."""
    now = dt.datetime.now(dt.UTC)
    return [
        {
            "at": now,
            "request_id": rid,
            "key_name": None if key_name == "-" else key_name,
            "customer_id": p.customer_id,
            "status": p.status,
            "churn_probability": p.churn_probability,
            "model_version": version,
            "arm": None,
        }
        for p in out
    ]
