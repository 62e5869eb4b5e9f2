"""Model versions: registration, ONNX export and parity, promotion, and the reads of all three."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from resources.registry.base import RegistryBase
from resources.registry.records import ModelVersion, RegistryError, current_code_version, dump, to_version
from resources.registry.tables import ARCHIVED, CANDIDATE, CHAMPION

if TYPE_CHECKING:
    import sqlalchemy as sa


class Versions(RegistryBase):
    """Model versions: registration, ONNX export and parity, promotion, and the reads of all three."""

    # --- writes -----------------------------------------------------------------

    def register(
        self,
        *,
        version: str,
        kind: str,
        run_id: str,
        data_window: dict[str, Any],
        features: list[str],
        params: dict[str, Any],
        metrics: dict[str, float],
        artifact_uri: str,
        artifact_sha256: str,
        code_version: str | None = None,
        reference_uri: str | None = None,
        reference_sha256: str | None = None,
    ) -> ModelVersion:
        """Record a trained model as a candidate. Registering the same artifact again keeps its status and history."""
        import sqlalchemy as sa

        versions = self._t.versions
        now = dt.datetime.now(dt.UTC)
        with self._write() as conn:
            existing = conn.execute(sa.select(versions.c.version).where(versions.c.version == version)).first()
            if existing is None:
                conn.execute(
                    versions.insert().values(
                        version=version,
                        kind=kind,
                        status=CANDIDATE,
                        created_at=now,
                        run_id=run_id,
                        code_version=code_version or current_code_version(self.code_version),
                        data_window=dump(data_window),
                        features=dump(features),
                        params=dump(params),
                        metrics=dump(metrics),
                        artifact_uri=artifact_uri,
                        artifact_sha256=artifact_sha256,
                        reference_uri=reference_uri,
                        reference_sha256=reference_sha256,
                    )
                )
                facts = {"kind": kind, "artifact_sha256": artifact_sha256, "reference_sha256": reference_sha256}
                self._event(conn, "registered", version, None, "pipeline", f"{kind} model trained", run_id, facts)
            else:
                self._event(conn, "retrained", version, None, "pipeline", "the same artifact was trained again", run_id)
        return self.get(version)

    def attach_onnx(self, version: str, onnx_uri: str, onnx_sha256: str, run_id: str) -> ModelVersion:
        """Record the ONNX artifact of a version; parity is unknown until the parity check records it."""
        import sqlalchemy as sa

        versions = self._t.versions
        with self._write() as conn:
            row = conn.execute(sa.select(versions.c.onnx_sha256).where(versions.c.version == version)).first()
            if row is None:
                raise RegistryError(f"cannot attach ONNX to unknown version {version!r}; register the model first")
            if row.onnx_sha256 != onnx_sha256:
                conn.execute(
                    versions.update()
                    .where(versions.c.version == version)
                    .values(onnx_uri=onnx_uri, onnx_sha256=onnx_sha256, parity=None, parity_passed=None)
                )
                self._event(
                    conn, "exported", version, None, "pipeline", f"ONNX artifact {onnx_sha256[:12]}", run_id, {"onnx_sha256": onnx_sha256}
                )
        return self.get(version)

    def record_parity(self, version: str, onnx_sha256: str, passed: bool, report: dict[str, Any], run_id: str) -> None:
        """Store the parity verdict for one ONNX artifact (ignored if the version has since been re-exported)."""
        versions = self._t.versions
        with self._write() as conn:
            updated = conn.execute(
                versions.update()
                .where((versions.c.version == version) & (versions.c.onnx_sha256 == onnx_sha256))
                .values(parity=dump(report), parity_passed=passed)
            ).rowcount
            if not updated:
                raise RegistryError(f"version {version!r} has no ONNX artifact {onnx_sha256[:12]} to record parity for")
            action = "parity_passed" if passed else "parity_failed"
            self._event(conn, action, version, None, "pipeline", dump(report), run_id, {"onnx_sha256": onnx_sha256})

    def record_tracking(self, version: str, tracking_run_id: str, run_id: str | None) -> None:
        """Link a version to the MLflow run it was logged to (the row and a `tracked` event); the link only, no decision."""
        versions = self._t.versions
        with self._write() as conn:
            updated = conn.execute(versions.update().where(versions.c.version == version).values(tracking_run_id=tracking_run_id)).rowcount
            if not updated:
                raise RegistryError(f"cannot link unknown version {version!r} to an MLflow run")
            self._event(
                conn, "tracked", version, None, "pipeline", f"MLflow run {tracking_run_id}", run_id, {"mlflow_run_id": tracking_run_id}
            )

    def promote(self, version: str, *, actor: str, reason: str, run_id: str | None, action: str = "promoted") -> ModelVersion:
        """Make `version` the champion and archive the previous one, in one transaction."""
        import sqlalchemy as sa

        versions = self._t.versions
        if not reason.strip() or not actor.strip():
            raise RegistryError("a promotion needs an actor and a reason")
        with self._write() as conn:
            # The head row's lock first: promotions (and rollbacks) queue up in every database, so two racing
            # ones cannot both read "no champion" (MariaDB has no partial unique index to stop the second).
            head = self._t.head
            conn.execute(head.update().where(head.c.id == 1).values(seq=head.c.seq))
            target = self._row(conn, version)
            if target is None:
                known = [v.version for v in self.versions()][:10]
                raise RegistryError(f"unknown model version {version!r}; known versions: {known}")
            model = to_version(target)
            if not model.promotable:
                raise RegistryError(
                    f"version {version!r} cannot be champion: it has "
                    f"{'no ONNX artifact' if not model.onnx_sha256 else 'not passed its ONNX parity check'}"
                )
            current = conn.execute(sa.select(versions.c.version).where(versions.c.status == CHAMPION)).scalar_one_or_none()
            if current == version:
                self._event(conn, "kept", version, current, actor, reason, run_id)
                return to_version(self._row(conn, version))
            # Archive first: the partial unique index allows one champion at any moment.
            conn.execute(versions.update().where(versions.c.status == CHAMPION).values(status=ARCHIVED))
            conn.execute(versions.update().where(versions.c.version == version).values(status=CHAMPION))
            self._event(conn, action, version, current, actor, reason, run_id)
        return self.get(version)

    def keep(self, champion: str | None, *, reason: str, run_id: str | None, candidate: str | None = None) -> None:
        """Record a promotion decision that kept the current champion."""
        with self._write() as conn:
            self._event(conn, "kept", candidate, champion, "pipeline", reason, run_id)

    # --- reads ------------------------------------------------------------------

    def champion(self) -> ModelVersion | None:
        import sqlalchemy as sa

        versions = self._t.versions
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(versions).where(versions.c.status == CHAMPION)).first()
        return to_version(row) if row else None

    def get(self, version: str) -> ModelVersion:
        with self.engine.connect() as conn:
            row = self._row(conn, version)
        if row is None:
            raise RegistryError(f"unknown model version {version!r}")
        return to_version(row)

    def versions(self, kind: str | None = None) -> list[ModelVersion]:
        import sqlalchemy as sa

        versions = self._t.versions
        query = sa.select(versions).order_by(versions.c.created_at.desc(), versions.c.version)
        if kind:
            query = query.where(versions.c.kind == kind)
        with self.engine.connect() as conn:
            return [to_version(r) for r in conn.execute(query)]

    def _row(self, conn: sa.Connection, version: str) -> Any:
        import sqlalchemy as sa

        versions = self._t.versions
        return conn.execute(sa.select(versions).where(versions.c.version == version)).first()
