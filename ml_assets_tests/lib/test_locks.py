"""Writer locks across processes: a second writer waits, gives up with the holder named, and gets the lock once a killed holder is gone.

The holder is a real child process (the locks exclude processes and
machines, not threads); Redis tests run against 127.0.0.1:6379 under a
lock name of their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from lib.locks import LockTimeout, file_lock, redis_lock
from ml_assets_tests.conftest import redis_up

REPO = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent(
    """
    import sys, time
    from lib.locks import file_lock, redis_lock
    kind, name, hold_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if kind == "file":
        lock = file_lock(name, wait_s=5)
    else:
        import redis
        lock = redis_lock(redis.Redis(host="127.0.0.1", port=6379), name, wait_s=5, lease_s=float(sys.argv[4]))
    with lock:
        print("held", flush=True)
        time.sleep(hold_s)
    print("released", flush=True)
    """
)


def _holder(*args: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, *args], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_file_lock_waits_for_the_holder_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "online_store.db.lock"
    holder = _holder("file", str(path), "1.5")
    t0 = time.monotonic()
    with pytest.raises(LockTimeout, match=f":{holder.pid} after"):
        with file_lock(path, wait_s=0.3):
            pass
    # Waiting long enough: the lock is ours as soon as the holder lets go, not before.
    with file_lock(path, wait_s=10):
        waited = time.monotonic() - t0
    assert 1.0 < waited < 5  # the holder kept it 1.5 s after saying so
    holder.wait(timeout=10)


def test_file_lock_of_a_killed_holder_is_free_at_once(tmp_path: Path) -> None:
    path = tmp_path / "online_store.db.lock"
    holder = _holder("file", str(path), "60")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    t0 = time.monotonic()
    with file_lock(path, wait_s=5):
        assert time.monotonic() - t0 < 1


@pytest.fixture
def redis_client():
    if not redis_up():
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    import redis

    return redis.Redis(host="127.0.0.1", port=6379)


def test_redis_lock_is_renewed_while_held_and_names_its_holder(redis_client) -> None:
    name = f"churn_test:{uuid.uuid4().hex[:8]}:online_writer"
    # A 1 s lease held for 3 s: without renewal it would lapse and let us in.
    holder = _holder("redis", name, "3", "1")
    try:
        with pytest.raises(LockTimeout, match=f":{holder.pid}:"):
            with redis_lock(redis_client, name, wait_s=2.0, lease_s=1.0):
                pass
        assert holder.stdout.readline().strip() == "released"  # type: ignore[union-attr]
        with redis_lock(redis_client, name, wait_s=2.0, lease_s=1.0):
            assert redis_client.exists(name)
        assert not redis_client.exists(name)  # released on exit
    finally:
        holder.kill()
        redis_client.delete(name)


def test_redis_lock_of_a_killed_holder_lapses_within_its_lease(redis_client) -> None:
    name = f"churn_test:{uuid.uuid4().hex[:8]}:online_writer"
    holder = _holder("redis", name, "60", "2")
    try:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        t0 = time.monotonic()
        with redis_lock(redis_client, name, wait_s=10, lease_s=2.0):
            assert time.monotonic() - t0 < 2.5
    finally:
        redis_client.delete(name)


class _Proxy:
    """A TCP relay to Redis that the test can cut: the lock holder's connection dies mid-hold."""

    def __init__(self, port: int = 6379) -> None:
        import socket
        import threading

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.target = port

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass

        def accept() -> None:
            while True:
                try:
                    client, _ = self.listener.accept()
                except OSError:
                    return
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self.sockets += [client, upstream]
                threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def cut(self) -> None:
        import socket

        # shutdown() before close(): a thread blocked in accept() keeps a merely closed listener alive on Linux.
        for s in (self.listener,):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.listener.close()  # no reconnecting either
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_a_redis_lock_whose_connection_is_cut_mid_hold_fails_its_holder_loudly(redis_client) -> None:
    import redis

    from lib.locks import LockLost

    name = f"churn_test:{uuid.uuid4().hex[:8]}:online_writer"
    proxy = _Proxy()
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        with pytest.raises(LockLost, match="lost while held") as raised:
            with redis_lock(client, name, wait_s=2.0, lease_s=0.9) as lost:
                assert lost() is None
                proxy.cut()
                deadline = time.monotonic() + 5
                while lost() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                # The renewal failed on a connection error (not a LockError) and the holder can see it before writing on.
                assert lost() is not None and not isinstance(lost(), LockTimeout)
        assert "CHURN_FEAST_REDIS_URL" in str(raised.value)
        # The lease lapsed: another writer can take the lock now.
        time.sleep(1.0)
        with redis_lock(redis_client, name, wait_s=2.0, lease_s=1.0):
            pass
    finally:
        proxy.cut()
        redis_client.delete(name)
