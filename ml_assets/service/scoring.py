"""Scoring one request: the served feature values through the champion's (or, for the canary share, the challenger's)
ONNX session, one answer per id; challengers in shadow are scored off the request path."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from lib.rollout import CANARY_ARM, CHAMPION_ARM, SHADOW_ARM, arm_of
from ml_assets.service.schemas import Prediction, Reason

if TYPE_CHECKING:
    from ml_assets.champion import Champion


def _scores(model: Champion, unique: list[str], served: dict[str, list[Any]], rows: list[int]) -> dict[str, float]:
    import numpy as np

    from lib.export import onnx_churn_probability

    if not rows:
        return {}
    columns = [served[f] for f in model.features]
    matrix = np.array([[col[i] for col in columns] for i in rows], dtype=np.float32)
    return dict(zip((unique[i] for i in rows), onnx_churn_probability(model.session, matrix, workers=1).tolist(), strict=True))


def _reasons(model: Champion, unique: list[str], served: dict[str, list[Any]], rows: list[int]) -> dict[str, list[Reason]]:
    """The serving model's reasons for each of ``rows`` (``lib.explain``: the same numbers batch_predictions stores)."""
    import numpy as np

    from lib.explain import explain, ranked
    from lib.features import feature_label

    spec = model.explainer
    if not rows or spec is None:
        return {}
    columns = [served[f] for f in spec.features]
    matrix = np.array([[col[i] for col in columns] for i in rows], dtype=np.float32)
    positions, values = ranked(explain(spec, matrix).contributions)
    return {
        unique[i]: [
            Reason(rank=r + 1, feature=spec.features[j], label=feature_label(spec.features[j]), contribution=float(values[k, r]))
            for r, j in enumerate(positions[k])
            if j >= 0
        ]
        for k, i in enumerate(rows)
    }


def known_rows(model: Champion, unique: list[str], served: dict[str, list[Any]]) -> list[int]:
    """The positions of the ids the store knows every feature of this model for."""
    if any(f not in served for f in model.features):
        return []
    columns = [served[f] for f in model.features]
    return [i for i in range(len(unique)) if all(col[i] is not None for col in columns)]


def answers(
    model: Champion,
    ids: list[str],
    unique: list[str],
    served: dict[str, list[Any]],
    canary: Champion | None = None,
    share: float = 0.0,
    explain: bool = False,
) -> list[Prediction]:
    """One prediction per requested id, in request order: 200 with the score, or 404 for an id the store does not know.

    ``served`` is Feast's answer for ``unique`` (request order, one value per id
    and feature, None where it does not know the id). A customer in the canary
    share (`lib/rollout.arm_of`, as in batch) gets the canary's score.
    """
    known = known_rows(model, unique, served)
    in_canary = {i for i in known if canary is not None and arm_of(unique[i], share) == CANARY_ARM}
    if canary is not None:
        in_canary &= set(known_rows(canary, unique, served))
    scores = _scores(model, unique, served, [i for i in known if i not in in_canary])
    canary_scores = _scores(canary, unique, served, sorted(in_canary)) if canary is not None else {}
    reasons = {}
    if explain:
        reasons = _reasons(model, unique, served, [i for i in known if i not in in_canary])
        if canary is not None:
            reasons.update(_reasons(canary, unique, served, sorted(in_canary)))
    stamp_of = {unique[i]: served[f"{model.features[0]}__ts"][i] for i in known}
    out = []
    for c in ids:
        if c in scores or c in canary_scores:
            ts = stamp_of[c]
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None
            by_canary = c in canary_scores
            out.append(
                Prediction(
                    customer_id=c,
                    status=200,
                    churn_probability=canary_scores[c] if by_canary else scores[c],
                    feature_timestamp=stamp,
                    model_version=canary.version if by_canary and canary else model.version,
                    arm=CANARY_ARM if by_canary else CHAMPION_ARM,
                    reasons=reasons.get(c) if explain else None,
                )
            )
        else:
            out.append(Prediction(customer_id=c, status=404, error="unknown customer: no features in the online store"))
    return out


def record_rows(out: list[Prediction], rid: str, key_name: str | None, version: str) -> list[dict[str, Any]]:
    """The prediction record's rows for one answered request (who asked, which model and arm, what it said)."""
    now = dt.datetime.now(dt.UTC)
    return [
        {
            "at": now,
            "request_id": rid,
            "key_name": None if key_name == "-" else key_name,
            "customer_id": p.customer_id,
            "status": p.status,
            "churn_probability": p.churn_probability,
            "model_version": p.model_version or version,
            "arm": p.arm,
        }
        for p in out
    ]


def shadow_rows(
    challengers: tuple[Champion, ...], unique: list[str], served: dict[str, list[Any]], rid: str, key_name: str | None
) -> list[dict[str, Any]]:
    """Every challenger's score of the request's known ids, for the record only (arm `shadow`): never returned."""
    now = dt.datetime.now(dt.UTC)
    rows = []
    for challenger in challengers:
        for customer, p in _scores(challenger, unique, served, known_rows(challenger, unique, served)).items():
            rows.append(
                {
                    "at": now,
                    "request_id": rid,
                    "key_name": None if key_name == "-" else key_name,
                    "customer_id": customer,
                    "status": 200,
                    "churn_probability": p,
                    "model_version": challenger.version,
                    "arm": SHADOW_ARM,
                }
            )
    return rows
