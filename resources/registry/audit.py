"""Reading and verifying the audit trail: the chain, its head, its key and anchor, the tables, every artifact against its sha256."""

from __future__ import annotations

from typing import Any

from resources.registry.records import utc
from resources.registry.versions import Versions


class Audit(Versions):
    """Reading and verifying the audit trail: the chain, its head, its key and anchor, the tables, every artifact against its sha256."""

    # --- verification -----------------------------------------------------------

    def chain(self) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
        """Every event in chain order and the head (newest seq, hash)."""
        import sqlalchemy as sa

        t = self._t
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(t.events).order_by(t.events.c.seq)).mappings()]
            head = conn.execute(sa.select(t.head.c.seq, t.head.c.hash).where(t.head.c.id == 1)).first()
        return rows, (head.seq, head.hash) if head else None

    def verify(self, artifacts: Any) -> list[str]:
        """Every problem found: breaks in the event chain (and, under the chain key, events without a valid MAC), tables
        that disagree with what the chain proves, a chain that disagrees with its anchor outside the database, and
        artifacts whose bytes do not match the registry's sha256 (or cannot be read). Empty: the history is intact,
        the tables are what it says, and every recorded artifact is what was registered (artifacts None: not read)."""
        from lib.chain import anchor_problems, check_chain
        from resources.registry.anchor import read_anchors

        events, head = self.chain()
        problems = [f"event {p.seq}: {p.problem}" for p in check_chain(events, head, self.chain_key)]
        problems += self.table_problems()
        if self.chain_anchor:
            problems += anchor_problems(events, read_anchors(self.chain_anchor))
        for v in self.versions() if artifacts is not None else []:
            for label, uri, sha in (
                ("native", v.artifact_uri, v.artifact_sha256),
                ("onnx", v.onnx_uri, v.onnx_sha256),
                ("reference", v.reference_uri, v.reference_sha256),
            ):
                if not uri or not sha:
                    continue
                try:
                    artifacts.get(uri, sha)
                except Exception as exc:  # noqa: BLE001 (each artifact is judged on its own)
                    problems.append(f"{v.version} {label} artifact {uri}: {type(exc).__name__}: {exc}")
        return problems

    def table_problems(self) -> list[str]:
        return []  # resources/registry/trust.py compares the tables with the chain

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        import sqlalchemy as sa

        events = self._t.events
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(events).order_by(events.c.id.desc()).limit(limit)).mappings().all()
        return [{**r, "at": utc(r["at"]).isoformat()} for r in rows]
