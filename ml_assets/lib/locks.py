"""Cross-process writer locks: a file lock for a store on this machine's disk, a Redis lock for a shared one.

Both wait up to `wait_s` seconds for the holder and then raise `LockTimeout`
naming the lock and, where known, who holds it. Neither outlives its holder
for long: the kernel drops a file lock when the process dies (a SIGKILL
included), and the Redis lock is a short lease that a background thread renews
while the holder lives, so a killed holder frees it within `lease_s`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator


class LockTimeout(TimeoutError):
    """The lock was still held by someone else when the wait ran out."""


def holder_id() -> str:
    """Who takes a lock: host and process, shown to whoever waits for it."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def file_lock(path: str | Path, wait_s: float, poll_s: float = 0.2) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the duration of the block.

    flock, not a lock row in a database: the kernel releases it when the
    holder's process ends however it ends, so a killed run never leaves the
    store locked. Holders on other machines are not seen: use it only for
    stores that live on this machine's disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    held_by = handle.read().strip() or "unknown"
                    raise LockTimeout(f"{path} is still locked by {held_by} after {wait_s:.0f} s") from None
                time.sleep(poll_s)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(holder_id())
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def redis_lock(client: Any, name: str, wait_s: float, lease_s: float = 60.0) -> Iterator[None]:
    """Hold the Redis lock `name` (redis-py's token lock) for the duration of the block.

    The lease is short and renewed every third of it by a daemon thread, so a
    long write keeps the lock and a holder that died frees it within
    `lease_s`. Should a renewal ever fail (the lease expired under a stalled
    holder), leaving the block raises instead of pretending it was exclusive.
    """
    from redis.exceptions import LockError

    lock = client.lock(name, timeout=lease_s, blocking=True, blocking_timeout=wait_s, thread_local=False)
    if not lock.acquire(token=f"{holder_id()}:{os.urandom(4).hex()}".encode()):
        held_by = client.get(name)
        raise LockTimeout(f"redis lock {name} is still held by {held_by.decode() if held_by else 'unknown'} after {wait_s:.0f} s")
    stop = threading.Event()
    lost: list[BaseException] = []

    def renew() -> None:
        while not stop.wait(lease_s / 3):
            try:
                lock.reacquire()
            except LockError as exc:  # the lease ran out: someone else may hold it now
                lost.append(exc)
                return

    renewer = threading.Thread(target=renew, name=f"renew {name}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(LockError):
            lock.release()
    if lost:
        raise LockTimeout(f"redis lock {name} expired while held (renewal failed: {lost[0]}); another writer may have run alongside")
