"""Model artifacts and reports, content-checked on every read.

Artifacts are written once under a name that includes their sha256 and are
verified against it before anyone loads them, so a truncated or tampered file
is refused instead of deserialized.  No pickle anywhere: models are stored in
their own formats (LightGBM text, ONNX protobuf), reports as HTML.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg
from pydantic import Field
from upath import UPath


class ArtifactIntegrityError(RuntimeError):
    """A stored artifact does not match its recorded checksum."""


@dataclass(frozen=True)
class ArtifactRef:
    uri: str
    sha256: str
    size_bytes: int

    def as_dict(self) -> dict[str, object]:
        return {"uri": self.uri, "sha256": self.sha256, "size_bytes": self.size_bytes}


class ArtifactStore(dg.ConfigurableResource):
    """Content-addressed storage for models, ONNX files and reports."""

    root: str = Field(description="Artifact root: a local folder or an fsspec URL such as s3://bucket/artifacts.")

    def put(self, namespace: str, data: bytes, suffix: str) -> ArtifactRef:
        """Store ``data`` as ``<root>/<namespace>/<sha256><suffix>`` (idempotent)."""
        digest = hashlib.sha256(data).hexdigest()
        path = UPath(self.root) / namespace / f"{digest}{suffix}"
        if not (path.exists() and _sha256(path.read_bytes()) == digest):
            _atomic_write(path, data)
        return ArtifactRef(str(path), digest, len(data))

    def put_named(self, namespace: str, name: str, data: bytes) -> ArtifactRef:
        """Store under a readable name (reports); replaced when written again."""
        path = UPath(self.root) / namespace / name
        _atomic_write(path, data)
        return ArtifactRef(str(path), hashlib.sha256(data).hexdigest(), len(data))

    def list_named(self, namespace: str) -> list[str]:
        """The names of the files directly under a namespace (reports), sorted; none when it does not exist."""
        path = UPath(self.root) / namespace
        if not path.exists():
            return []
        return sorted(p.name for p in path.iterdir() if p.is_file())

    def read_named(self, namespace: str, name: str) -> bytes | None:
        """A named file's bytes (a day's stored drift verdict), or None when there is none. Named files are not
        content-addressed: nothing read here is loaded as code or a model."""
        path = UPath(self.root) / namespace / name
        return path.read_bytes() if path.exists() else None

    def remove_named(self, namespace: str, name: str) -> bool:
        """Remove a named file (a report that no longer matches its day's verdict); whether there was one."""
        path = UPath(self.root) / namespace / name
        if not path.exists():
            return False
        path.unlink()
        return True

    def get(self, uri: str, sha256: str) -> bytes:
        """Read an artifact and verify it before returning a byte of it."""
        try:
            data = UPath(uri).read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactIntegrityError(f"artifact {uri} is missing") from exc
        actual = _sha256(data)
        if actual != sha256:
            raise ArtifactIntegrityError(f"artifact {uri} has sha256 {actual}, expected {sha256}; refusing to load it")
        return data


@dataclass(frozen=True)
class SweptFile:
    uri: str
    size_bytes: int
    age_hours: float
    reason: str


# Content-addressed namespaces: every file in them is a model or a reference the
# registry should point to. Drift reports are named per day and replaced, never orphaned.
REGISTERED_NAMESPACES = ("models", "references")


def sweep(
    store: ArtifactStore,
    referenced: Iterable[str],
    *,
    older_than: dt.timedelta,
    apply: bool,
    namespaces: Iterable[str] = REGISTERED_NAMESPACES,
) -> list[SweptFile]:
    """Files no registry row points to, and temporary files of interrupted writes, older than ``older_than``.

    A run killed between writing an artifact and committing its registry row
    leaves the file behind (the registry never points at it, so nothing reads
    it). The age threshold keeps a file a running training has written but not
    registered yet. With ``apply=False`` nothing is deleted: the list says what would be.
    """
    keep = {str(UPath(uri)) for uri in referenced if uri}
    now = time.time()
    found = []
    for namespace in namespaces:
        base = UPath(store.root) / namespace
        if not base.exists():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            if str(path) in keep:
                continue
            stat = path.stat()
            age = now - stat.st_mtime
            if age < older_than.total_seconds():
                continue
            interrupted = path.name.startswith(".") and path.name.endswith(".tmp")
            reason = "temporary file of an interrupted write" if interrupted else "no registry version refers to it"
            found.append(SweptFile(str(path), stat.st_size, round(age / 3600, 2), reason))
            if apply:
                path.unlink()
    return found


def registry_references(versions: Iterable[object]) -> set[str]:
    """Every artifact URI the registry's versions point to (model, ONNX, reference sample)."""
    return {uri for v in versions for uri in (v.artifact_uri, v.onnx_uri, v.reference_uri) if uri}  # type: ignore[attr-defined]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: UPath, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    tmp.rename(path)
