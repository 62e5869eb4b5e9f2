"""API keys of the scoring service: salted digests only, each change an event."""

from __future__ import annotations

import datetime as dt
from typing import Any

from resources.registry.base import RegistryBase
from resources.registry.records import RegistryError


class ApiKeys(RegistryBase):
    """API keys of the scoring service: salted digests only, each change an event."""

    # --- API keys (the scoring service's callers) ---------------------------------

    def create_api_key(self, name: str, scopes: list[str], *, actor: str) -> str:
        """A new key for `name`; returns the token, which is not stored anywhere (only its salted digest)."""
        import sqlalchemy as sa

        from lib.governance import KEY_NAME, check_scopes, new_key

        if not KEY_NAME.match(name):
            raise RegistryError("a key name is 1 to 64 letters, digits, dots, dashes or underscores")
        chosen = check_scopes(scopes)
        keys, key = self._t.api_keys, new_key()
        with self._write() as conn:
            active = keys.c.revoked_at.is_(None) & (keys.c.name == name)
            if conn.execute(sa.select(keys.c.key_id).where(active)).first() is not None:
                raise RegistryError(f"an active key named {name!r} exists; revoke it first (churn apikey revoke {name})")
            conn.execute(
                keys.insert().values(
                    key_id=key.key_id,
                    name=name,
                    scopes=",".join(chosen),
                    salt=key.salt,
                    digest=key.digest,
                    created_at=dt.datetime.now(dt.UTC),
                    created_by=actor[:200],
                )
            )
            facts = {"key_id": key.key_id, "name": name, "scopes": list(chosen), "salt": key.salt, "digest": key.digest}
            self._event(conn, "apikey_created", None, None, actor, f"key {name} ({key.key_id}) scopes {','.join(chosen)}", None, facts)
        return key.token

    def revoke_api_key(self, name: str, *, actor: str) -> int:
        """Revoke every active key named `name`; returns how many."""
        import sqlalchemy as sa

        keys = self._t.api_keys
        with self._write() as conn:
            active = (keys.c.name == name) & keys.c.revoked_at.is_(None)
            ids = sorted(conn.execute(sa.select(keys.c.key_id).where(active)).scalars())
            revoked = conn.execute(keys.update().where(active).values(revoked_at=dt.datetime.now(dt.UTC))).rowcount
            if revoked:
                self._event(conn, "apikey_revoked", None, None, actor, f"key {name} ({revoked} revoked)", None, {"key_ids": ids})
        return revoked

    def api_keys(self, *, active_only: bool = True) -> list[dict[str, Any]]:
        """Key rows (digests and salts, never keys): what the service checks bearer tokens against."""
        import sqlalchemy as sa

        keys = self._t.api_keys
        query = sa.select(keys).order_by(keys.c.created_at)
        if active_only:
            query = query.where(keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
