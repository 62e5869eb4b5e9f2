"""The model registry: every trained model as a version, one champion, and an audit trail.

Backed by any SQLAlchemy database (SQLite by default, PostgreSQL in
production).  Two tables:

- ``model_versions``: one row per trained model (kind, training data window,
  Dagster run id, code version, metrics, native and ONNX artifact URIs with
  their sha256, ONNX parity result) and its status: ``candidate``,
  ``champion`` or ``archived``.  A partial unique index allows at most one
  champion, so two promotions racing cannot both win.
- ``registry_events``: every registration, promotion, decision to keep the
  champion, rollback, API-key change and erasure, with who, when, why and the
  run that did it. Append-only: each event carries the sha256 of the one
  before it (``lib/chain.py``), a one-row head table holds the newest,
  and database triggers refuse UPDATE and DELETE, so `churn registry verify`
  finds any rewritten, removed or truncated event. Each event also carries
  what it proves (digests, parity, key facts, erased hashes): the other tables
  are replayed from the chain and checked against it before scoring or the
  service trusts them. Optionally keyed (an HMAC per event) and anchored
  outside the database.

Three more tables belong to the service and to erasure: ``api_keys`` (salted
digests, never the keys), ``prediction_log`` (every online prediction) and
``erased_customers`` (sha256 of erased ids, refused at the next ingest).

A version is registered only after its artifact has been written (the artifact
store writes atomically under the sha256), so the registry never points at a
missing or half-written file.
"""

from __future__ import annotations

from resources.registry.erasures import Erasures
from resources.registry.predictions import PredictionRecord
from resources.registry.records import ModelVersion, RegistryError, current_code_version
from resources.registry.tables import ARCHIVED, CANDIDATE, CHAMPION, Tables
from resources.registry.trust import ChainMismatch, Trust

__all__ = [
    "ARCHIVED",
    "CANDIDATE",
    "CHAMPION",
    "ChainMismatch",
    "ModelRegistry",
    "ModelVersion",
    "RegistryError",
    "Tables",
    "current_code_version",
]


class ModelRegistry(Trust, PredictionRecord, Erasures):
    """Model versions, the champion and the audit trail, in a SQL database.

    One resource, one facade; each concern is its own module in this package:
    versions.py (register, export, parity, promote, reads; audit.py builds on it), chain.py (the
    append-only hash chain), audit.py (verify), keys.py, predictions.py and
    erasures.py; rollout.py (challengers, the policy's own promotions and rollbacks) builds on audit.py; trust.py
    (what the hash chain proves: the champion, digests, keys and erased ids checked before use) builds on both.
    """
