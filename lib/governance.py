"""Pure rules of the registry's governance: API keys, identities, erased-id hashes (the hash chain: lib/chain.py).

Nothing here touches a database or the network; `resources/registry.py` stores
what these functions compute and `ml_assets/service/app.py` checks keys with them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
import re
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# --- API keys -------------------------------------------------------------------------------

SCOPES = ("predict", "metrics")
KEY_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# churn_<12 hex: the key's id, stored in clear to find its row>_<43 url-safe characters: the secret>
KEY_FORMAT = re.compile(r"^churn_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret: str
    salt: str
    digest: str

    @property
    def token(self) -> str:
        """What the client sends (`Authorization: Bearer <token>`); shown once, never stored."""
        return f"churn_{self.key_id}_{self.secret}"


def key_digest(salt: str, secret: str) -> str:
    # HMAC-SHA256 keyed by a per-key salt: the secret carries 256 bits, so a slow password hash
    # would add latency to every request without making a guess any likelier to fail.
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def new_key() -> NewKey:
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    return NewKey(key_id, secret, salt, key_digest(salt, secret))


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None (nothing about the value is echoed anywhere)."""
    match = KEY_FORMAT.match(token)
    return (match.group(1), match.group(2)) if match else None


def key_matches(salt: str, digest: str, secret: str) -> bool:
    return hmac.compare_digest(key_digest(salt, secret), digest)


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if not chosen or unknown:
        raise ValueError(f"scope must be one or more of {', '.join(SCOPES)}; got {', '.join(chosen) or 'none'}")
    return chosen


# --- identities -----------------------------------------------------------------------------


def os_identity() -> str:
    """The operating-system account running this process, from the kernel's uid (not $USER, which anyone sets)."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "unknown"
    return f"os:{name}(uid {uid})@{socket.gethostname()}"


# Tags Dagster puts on a run that say what launched it; a person's name only where the deployment
# authenticates users (Dagster+ sets dagster/user), never a value from the run config.
_LAUNCH_TAGS = (
    ("dagster/user", "user"),
    ("dagster/schedule_name", "schedule"),
    ("dagster/sensor_name", "sensor"),
    ("dagster/backfill", "backfill"),
)


def run_identity(run_id: str, tags: Mapping[str, str]) -> str:
    """Who launched a Dagster run, from the run's own tags: user, schedule, sensor or backfill; else the run alone
    (Dagster OSS authenticates no one, so a launchpad run is known by its id and the host that executed it)."""
    for tag, label in _LAUNCH_TAGS:
        if tags.get(tag):
            return f"dagster:{label}={tags[tag]} run={run_id}"
    return f"dagster:run={run_id} (unauthenticated launch) on {socket.gethostname()}"


def id_hash(customer_id: str, key: str | None = None) -> str:
    """What the registry keeps of an erased customer's id: enough to refuse the id at the next ingest, not the id.

    With a key (deployment.erasure_key, a secret), HMAC-SHA256: without the key
    nobody can test candidate ids against it, which a short numeric id would
    otherwise allow. Without one, a plain sha256.
    """
    message = b"churn-erasure\x00" + customer_id.encode()
    if key:
        return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def id_hashes(customer_id: str, key: str | None) -> tuple[str, ...]:
    """Every form an erasure of this id may have been recorded in: keyed and plain (erasures recorded before a key
    was set keep being refused)."""
    return (id_hash(customer_id, key), id_hash(customer_id)) if key else (id_hash(customer_id),)
