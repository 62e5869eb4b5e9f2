"""Probe: do two processes claiming a Dagster pool of limit 1 at the same instant ever both get it?

Not a benchmark and not in `make bench`: it reproduces the README's figures
for why `online_features` takes the online store's own writer lock instead of
trusting the `feast_online` pool (with dagster 1.13.27 both won in 3 of 14
tries on SQLite storage and 5 of 24 on PostgreSQL). Each try uses a fresh pool; the two claimers
start on the same wall-clock instant and retry for 5 s, as a run's executor
does.

    .venv/bin/python benchmarks/probe_pool_claims.py --storage sqlite --tries 8
    .venv/bin/python benchmarks/probe_pool_claims.py --storage postgres --tries 12

PostgreSQL: a scratch database `dagster_pool_probe` is created on the server
of CHURN_TEST_PG_URL (default postgresql+psycopg2://postgres@127.0.0.1:5432/test)
and dropped afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

PROBE_DB = "dagster_pool_probe"


def _claimer(home: str, pool: str, run_id: str, start_at: float, out: mp.Queue) -> None:
    os.environ["DAGSTER_HOME"] = home
    import dagster as dg

    storage = dg.DagsterInstance.get().event_log_storage
    while time.time() < start_at:
        pass
    deadline = time.time() + 5
    claimed = False
    while time.time() < deadline and not claimed:
        claimed = storage.claim_concurrency_slot(pool, run_id, "online_features").is_claimed
        if not claimed:
            time.sleep(0.05)
    out.put((run_id, claimed))
    time.sleep(1)  # hold it while the other one tries


def _instance_yaml(storage: str, home: str, pg_url: str) -> str:
    if storage == "sqlite":
        return f"storage:\n  sqlite:\n    base_dir: {home}/storage\n"
    return f"storage:\n  postgres:\n    postgres_url: {pg_url}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--tries", type=int, default=8)
    args = parser.parse_args()

    import sqlalchemy as sa

    base_url = os.environ.get("CHURN_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    pg_url = sa.make_url(base_url).set(database=PROBE_DB).render_as_string(hide_password=False)
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT") if args.storage == "postgres" else None
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PROBE_DB}"))  # noqa: S608 (a constant name)
            conn.execute(sa.text(f"CREATE DATABASE {PROBE_DB}"))  # noqa: S608 (a constant name)
    both = 0
    try:
        import dagster as dg

        for attempt in range(args.tries):
            home = tempfile.mkdtemp(prefix="pool-probe-")
            Path(home, "dagster.yaml").write_text(_instance_yaml(args.storage, home, pg_url))
            os.environ["DAGSTER_HOME"] = home
            pool = f"probe_{attempt}_{os.getpid()}"
            with dg.DagsterInstance.get() as instance:
                instance.event_log_storage.set_concurrency_slots(pool, 1)
            out: mp.Queue = mp.Queue()
            start_at = time.time() + 2.0  # both processes imported and waiting by then
            claimers = [mp.Process(target=_claimer, args=(home, pool, f"run-{attempt}-{i}", start_at, out)) for i in range(2)]
            for p in claimers:
                p.start()
            results = [out.get(timeout=60) for _ in claimers]
            for p in claimers:
                p.join()
            won = sum(claimed for _, claimed in results)
            both += won == 2
            print(f"try {attempt + 1}: {won} of 2 claimers got the pool's one slot", flush=True)
        print(f"\n{args.storage} storage: both claimers got the one slot in {both} of {args.tries} tries")
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {PROBE_DB} WITH (FORCE)"))  # noqa: S608 (a constant name)


if __name__ == "__main__":
    main()
