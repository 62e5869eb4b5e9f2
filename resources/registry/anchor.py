"""The chain head kept outside the database: one small object per event (position, hash, MAC) under a folder or bucket.

Whoever can write the registry database can cut the chain's tail and move the
head back to an older, genuine event; neither the hashes nor the key can tell.
An anchor the database's writers cannot change can: with S3 object lock
(compliance mode) on the bucket, or a folder the registry's database account
cannot reach, `churn registry verify` compares the chain with the newest anchor.
One object per event because object stores have no append and object lock
protects whole objects.
"""

from __future__ import annotations

import json
from typing import Any


def _name(seq: int) -> str:
    return f"{seq:012d}.json"


def write_anchors(root: str, rows: list[dict[str, Any]]) -> None:
    """One object per event; an existing anchor is never overwritten (it is the evidence a later verify compares with).

    On an object store each anchor is one PUT (atomic there, and object lock protects exactly that object); a
    local folder gets a temporary file renamed into place.
    """
    import logging

    from upath import UPath

    from resources.lake import Lake

    folder = UPath(root)
    local = folder.protocol in ("", "file", "local")
    for row in rows:
        path = folder / _name(row["seq"])
        body = json.dumps({"seq": row["seq"], "hash": row["hash"], "mac": row.get("mac"), "action": row["action"]}, sort_keys=True)
        if path.exists():
            if json.loads(path.read_bytes()).get("hash") != row["hash"]:
                logging.getLogger(__name__).error(
                    "chain anchor %s already holds another hash for event %s: kept as it is (churn registry verify)", root, row["seq"]
                )
            continue
        if local:
            Lake.write_bytes(path, body.encode())
        else:
            path.write_bytes(body.encode())


def read_anchors(root: str) -> list[dict[str, Any]]:
    """Every anchor under `root`, oldest first (an empty list when the folder does not exist yet)."""
    from upath import UPath

    folder = UPath(root)
    folder.fs.invalidate_cache()  # an object store's listing and ETags as they are now, not as this process last saw them
    if not folder.exists():
        return []
    anchors = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.endswith(".json") and path.name[:12].isdigit():
            try:
                anchors.append(json.loads(path.read_bytes()))
            except ValueError:
                anchors.append({"seq": int(path.name[:12]), "hash": None, "unreadable": True})
    return anchors


def has_anchors(root: str) -> bool:
    from upath import UPath

    folder = UPath(root)
    return folder.exists() and any(p.name.endswith(".json") for p in folder.iterdir())
