"""churn scenario rollback: a small generated world where a degraded champion is rolled back by the policy by itself.

The scenario runs in a folder and a Dagster instance of its own (the demo's
data is not touched): it generates a purchase log, trains a good champion,
trains a second model on shuffled labels and forces it in as champion the way
a person would (`rollback_to`, with who and why), scores two weeks apart with
the previous champion in shadow, and lets the matured outcomes speak. It ends
with one line, `scenario rollback: ok (...)`, or fails naming what did not
happen.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

START, END = dt.date(2024, 7, 1), dt.date(2025, 1, 31)
TRAIN_UNTIL = dt.date(2024, 12, 15)
HORIZON = 21
SCORED = dt.date(2024, 12, 20)  # the degraded champion's first scored day
NEXT = SCORED + dt.timedelta(days=1)  # its second: the good model, in shadow, is scored too
MATURED = SCORED + dt.timedelta(days=HORIZON)  # the first day's outcomes are known here: the first evaluation
AFTER = MATURED + dt.timedelta(days=1)  # the good model (champion again) is judged on its own matured scores: nothing happens


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook on 127.0.0.1 that keeps what it is sent (the alert as the user's chat would get it)."""

    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _settings(root: Path, webhook: str) -> Any:
    """The scenario's own settings, every location under ``root`` (never the user's file or data)."""
    from lib.settings import Deployment, Settings, Source

    return Settings.model_validate(
        {
            "source": Source(url=f"sqlite:///{root / 'warehouse.sqlite'}").model_dump(),
            "deployment": Deployment(data_dir=str(root), feast_repo=str(root / "feature_repo")).model_dump()
            | {"failure_webhook_url": webhook},
            "partitions_start": START,
            "label_horizon_days": HORIZON,
            "min_history_days": 60,
        }
    )


class ScenarioError(RuntimeError):
    """A step of the scenario did not do what it must."""


def _expect(condition: object, what: str) -> None:
    if not condition:
        raise ScenarioError(what)


def _stage(name: str, started: float) -> None:
    print(f"   {name} ({time.perf_counter() - started:.0f}s)", flush=True)


def cmd_scenario(args: argparse.Namespace) -> int:
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="churn-scenario-"))
    root.mkdir(parents=True, exist_ok=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        verdict = _run(root, args.customers, _settings(root, f"http://127.0.0.1:{server.server_address[1]}/hook"))
    except RuntimeError as exc:
        print(f"scenario rollback: FAILED ({exc})", file=sys.stderr)
        return 1
    finally:
        server.shutdown()
    print(f"scenario rollback: ok ({verdict})")
    return 0


def _run(root: Path, customers: int, settings: Any) -> str:
    import dagster as dg

    from lib.datagen import GeneratorConfig, generate_transactions
    from ml_assets.pipeline import INGEST_TO_FEATURES, SCORING, TRAINING, materialize_range, materialize_unpartitioned
    from resources import SqlWarehouse, build_registry, build_resources

    t0 = time.perf_counter()
    print(f"scenario rollback in {root}: {customers} generated customers, {START}..{END}, {HORIZON}-day horizon", flush=True)
    source = SqlWarehouse(url=settings.source.url)
    source.create_table(replace=True)
    source.append(generate_transactions(GeneratorConfig(start=START, end=END, customers=customers, seed=17)))
    (root / "dagster").mkdir(exist_ok=True)
    # A persistent instance of the scenario's own: `DAGSTER_HOME=<dir>/dagster make ui` shows what happened.
    with dg.DagsterInstance.local_temp(str(root / "dagster"), overrides={"telemetry": {"enabled": False}}) as instance:
        resources = build_resources(settings)
        registry = build_registry(resolve_env=True, settings=settings)

        def ok(result: dg.ExecuteInProcessResult, what: str) -> None:
            if not result.success:
                raise RuntimeError(f"{what} failed (run {result.run_id})")

        ok(
            materialize_range(INGEST_TO_FEATURES, START, MATURED + dt.timedelta(days=1), instance, resources, "WARNING", settings=settings),
            "ingestion",
        )
        _stage("ingested and built features", t0)
        quick = {"lgbm_model": {"config": {"max_trials": 2}}, "torch_model": {"config": {"max_epochs": 6}}}
        ok(
            materialize_unpartitioned(
                TRAINING,
                instance,
                {"ops": {"training_set": {"config": {"latest_snapshot": TRAIN_UNTIL.isoformat()}}, **quick}},
                resources,
                "WARNING",
                settings,
            ),
            "training",
        )
        good = registry.champion()
        _expect(good is not None, "the first training promoted no champion")
        _stage(f"trained the champion {good.version}", t0)
        drill = {"training_set": {"config": {"latest_snapshot": TRAIN_UNTIL.isoformat(), "drill_shuffle_train_labels": True}}}
        drill["lgbm_model"] = {"config": {"max_trials": 1, "min_roc_auc": 0.0}}
        selection = dg.AssetSelection.assets("training_set", "lgbm_model", "lgbm_onnx")
        ok(materialize_unpartitioned(selection, instance, {"ops": drill}, resources, "WARNING", settings), "the degraded model's training")
        bad = registry.versions(kind="lightgbm")[0]
        _expect(bad.version != good.version and bad.promotable, f"the degraded model {bad.version} did not pass its parity check")
        force = {"rollback_to": bad.version, "requested_by": "churn scenario rollback", "reason": "drill: a degraded model forced in"}
        ok(
            materialize_unpartitioned(
                ["champion_model"], instance, {"ops": {"champion_model": {"config": force}}}, resources, "WARNING", settings
            ),
            "forcing it in",
        )
        _expect(registry.champion().version == bad.version and registry.previous_champion() == good.version, "the forced champion")
        _stage(f"forced the degraded {bad.version} in; {good.version} is scored in shadow", t0)
        for day in (SCORED, NEXT, MATURED, AFTER):
            ok(materialize_range(SCORING, day, day, instance, resources, "WARNING", settings=settings), f"scoring {day}")
        _stage("scored the degraded champion's first day and the day its outcomes matured", t0)
        return _check(instance, registry, good.version, bad.version, root)


def _check(instance: Any, registry: Any, good: str, bad: str, root: Path) -> str:
    import dagster as dg

    events = [e for e in registry.chain()[0] if e["action"] == "auto_rolled_back"]
    _expect(len(events) == 1, f"expected one automatic rollback, found {len(events)}")
    _expect(registry.champion().version == good, f"the champion is {registry.champion().version}, not {good}")
    _expect(bad in registry.auto_blocked(), f"{bad} may be promoted again automatically")

    def evaluation(day: dt.date) -> dict[str, Any]:
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("rollout_evaluation"), asset_partitions=[day.isoformat()]), limit=1
        ).records
        return {k: v.value for k, v in record.asset_materialization.metadata.items()}

    md, after = evaluation(MATURED), evaluation(AFTER)
    _expect(md["verdict"] == "rollback" and "rolled back" in md["acted"], f"{MATURED}: {md.get('reason')}")
    _expect(after["champion"] == good and after["verdict"] == "none", f"{AFTER}: the good champion was not left alone: {after}")
    alerts = [b for b in _Receiver.bodies if b.get("kind") == "rollback"]
    _expect(len(alerts) == 1 and bad in alerts[0]["text"], f"expected one rollback alert, got {len(alerts)}")
    return (
        f"{bad} matured ROC-AUC {md['champion_matured_roc_auc']:.3f} [{md['champion_matured_roc_auc_low']:.3f}, "
        f"{md['champion_matured_roc_auc_high']:.3f}] on {md['matured_rows']} customers < floor; rolled back to {good} once on {MATURED}; "
        f"{good} then held (matured ROC-AUC {after.get('champion_matured_roc_auc', float('nan')):.3f}); 1 alert; data in {root}"
    )


def register(sub: argparse._SubParsersAction) -> None:
    scenario = sub.add_parser("scenario", help="scenarios anyone can run on a generated world: rollback")
    scenario.add_argument("name", choices=["rollback"], help="rollback: a degraded champion rolled back on matured outcomes")
    scenario.add_argument("--dir", help="folder for the scenario's data (default: a new temporary folder)")
    scenario.add_argument("--customers", type=int, default=1500, help="generated customers")
    scenario.set_defaults(func=cmd_scenario)
