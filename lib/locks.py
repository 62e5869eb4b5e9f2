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
    from collections.abc import Callable, Iterator


class LockTimeout(TimeoutError):
    """The lock was still held by someone else when the wait ran out."""


class LockLost(LockTimeout):
    """The lock's lease could not be renewed while held: another writer may have run alongside."""


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
def redis_lock(client: Any, name: str, wait_s: float, lease_s: float = 60.0) -> Iterator[Callable[[], BaseException | None]]:
    """Hold the Redis lock `name` (redis-py's token lock) for the duration of the block.

    The lease is short and renewed every third of it by a daemon thread, so a
    long write keeps the lock and a holder that died frees it within
    `lease_s`. Any failed renewal counts as losing the lock: a lease that ran
    out (LockError) and equally a Redis that cannot be reached (connection
    refused, reset or timed out), since the lease then lapses unseen. The
    holder can ask `lost()` (the callable the block receives) before each
    write, and leaving the block raises `LockLost` instead of pretending the
    block was exclusive.
    """

    lock = client.lock(name, timeout=lease_s, blocking=True, blocking_timeout=wait_s, thread_local=False)
    if not lock.acquire(token=f"{holder_id()}:{os.urandom(4).hex()}".encode()):
        held_by = client.get(name)
        raise LockTimeout(f"redis lock {name} is still held by {held_by.decode() if held_by else 'unknown'} after {wait_s:.0f} s")
    stop = threading.Event()
    lost: list[BaseException] = []
    renewed = [time.monotonic()]  # when the current lease began (at the latest)

    def renew() -> None:
        while not stop.wait(lease_s / 3):
            started = time.monotonic()
            try:
                lock.reacquire()
                renewed[0] = started
            except Exception as exc:  # noqa: BLE001 (any failure: the lease may lapse unseen, so the lock is lost)
                lost.append(exc)
                return

    def check() -> BaseException | None:
        # Also lost when no renewal got through within a lease: a client that retries a dead connection
        # (redis-py backs off for seconds) must not leave the holder believing it still holds the lock.
        if not lost and time.monotonic() - renewed[0] > lease_s:
            lost.append(TimeoutError(f"no renewal reached Redis within the {lease_s:g} s lease"))
        return lost[0] if lost else None

    renewer = threading.Thread(target=renew, name=f"renew {name}", daemon=True)
    renewer.start()
    try:
        yield check
    finally:
        stop.set()
        renewer.join(timeout=lease_s)
        if check() is None:
            try:
                lock.release()
            except Exception as exc:  # noqa: BLE001 (a release that fails means the lease was not ours to the end)
                lost.append(exc)
    if lost:
        raise LockLost(
            f"redis lock {name} was lost while held ({type(lost[0]).__name__}: {lost[0]}); another writer may have run "
            "alongside: check the Redis connection (CHURN_FEAST_REDIS_URL) and run the step again"
        )
