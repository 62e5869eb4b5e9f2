"""What a caller sends and gets back: ids only in, one result per id out; errors that never echo input."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from lib.contract import customer_id_ok


# The data contract's default customer-id rule (lib/contract.py): printable, 1 to 64
# characters, no leading or trailing white space. An id the pipeline accepts can be scored.
def customer_id(value: str) -> str:
    if not customer_id_ok(None)(value):
        raise ValueError("a customer id is printable text of 1 to 64 characters without leading or trailing white space")
    return value


def predict_request(max_batch: int) -> type[BaseModel]:
    class PredictRequest(BaseModel):
        # Unknown fields are refused (422): a caller cannot smuggle feature values in.
        model_config = ConfigDict(extra="forbid")
        customer_ids: list[Annotated[str, StringConstraints(max_length=64), AfterValidator(customer_id)]] = Field(
            min_length=1, max_length=max_batch, description=f"Customer ids to score (1 to {max_batch})."
        )

    return PredictRequest


class Prediction(BaseModel):
    customer_id: str
    status: int = Field(description="200 scored, 404 unknown to the online store (this item only).")
    churn_probability: float | None = None
    feature_timestamp: str | None = Field(default=None, description="When the served features were valid (UTC, ISO 8601).")
    model_version: str | None = Field(default=None, description="The model that served this score (the canary's for its share).")
    arm: str | None = Field(default=None, description="champion, or canary (a stable share of customers by a hash of the id).")
    error: str | None = None


class PredictResponse(BaseModel):
    request_id: str
    model_version: str
    predictions: list[Prediction]


def validation_detail(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors without `input` or `ctx`: where and what, never the caller's value echoed back."""
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))[:300], "type": e.get("type", "")} for e in errors[:20]]
