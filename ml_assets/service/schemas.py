"""What a caller sends and gets back: ids only in, one result per id out; errors that never echo input."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from lib.contract import customer_id_ok
from lib.sections import SERVICE_ID_PATTERN


def id_rule(service_pattern: str = SERVICE_ID_PATTERN, contract_pattern: str | None = None) -> Callable[[str], str]:
    """What a requested id must be: what ingestion accepts (the data contract's rule: the configured
    `source.customer_id_pattern`, else printable text of 1 to 64 characters without surrounding white space) and,
    on top, the service's own pattern (`deployment.service.customer_id_pattern`). The 422 names the rule, never the value."""
    contract_ok = customer_id_ok(contract_pattern)
    service = re.compile(service_pattern)
    rule = f"a customer id must match {service_pattern}" + (f" and {contract_pattern}" if contract_pattern else "")

    def check(value: str) -> str:
        if not (contract_ok(value) and service.fullmatch(value)):
            raise ValueError(rule)
        return value

    return check


def predict_request(max_batch: int, check: Callable[[str], str] | None = None) -> type[BaseModel]:
    rule = check or id_rule()

    class PredictRequest(BaseModel):
        # Unknown fields are refused (422): a caller cannot smuggle feature values in.
        model_config = ConfigDict(extra="forbid")
        customer_ids: list[Annotated[str, StringConstraints(max_length=64), AfterValidator(rule)]] = Field(
            min_length=1, max_length=max_batch, description=f"Customer ids to score (1 to {max_batch})."
        )
        explain: bool = Field(
            default=False, description="Also return, per score, the features that pushed it up most (as batch_predictions' reasons)."
        )

    return PredictRequest


class Reason(BaseModel):
    rank: int = Field(description="1 is the feature that pushed the score up most.")
    feature: str = Field(description="The feature's column name.")
    label: str = Field(description="What the feature means, in words.")
    contribution: float = Field(description="How much it raised the log-odds of churn.")


class Prediction(BaseModel):
    customer_id: str
    status: int = Field(description="200 scored, 404 unknown to the online store (this item only).")
    churn_probability: float | None = None
    feature_timestamp: str | None = Field(default=None, description="When the served features were valid (UTC, ISO 8601).")
    model_version: str | None = Field(default=None, description="The model that served this score (the canary's for its share).")
    arm: str | None = Field(default=None, description="champion, or canary (a stable share of customers by a hash of the id).")
    reasons: list[Reason] | None = Field(default=None, description="With explain: the serving model's reasons (at most 3, each positive).")
    error: str | None = None


class PredictResponse(BaseModel):
    request_id: str
    model_version: str
    predictions: list[Prediction]


def validation_detail(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors without `input` or `ctx`: where and what, never the caller's value echoed back."""
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))[:300], "type": e.get("type", "")} for e in errors[:20]]
