"""churn registry, churn apikey, churn artifacts: the model registry, the service's keys and the artifact store."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any


def cmd_registry(args: argparse.Namespace) -> int:
    from resources import build_registry

    registry = build_registry(resolve_env=True)
    if args.action == "verify":
        return _verify_registry(registry)
    versions = registry.versions()
    if not versions:
        print("the model registry is empty: materialize training_job (or run `churn demo`) first")
        return 0
    print(f"{'version':20s} {'kind':9s} {'status':9s} {'created (UTC)':20s} {'backtest AUC':>12s}  {'ONNX parity':12s} run")
    for v in versions:
        parity = "passed" if v.parity_passed else ("FAILED" if v.parity_passed is False else "unchecked")
        print(
            f"{v.version:20s} {v.kind:9s} {v.status:9s} {v.created_at:%Y-%m-%d %H:%M:%S}  {v.metrics.get('backtest_roc_auc', float('nan')):12.4f}  "
            f"{parity:12s} {v.run_id[:8]}"
        )
    champion = registry.champion()
    if champion is not None:
        from upath import UPath

        from ml_assets.assets.card import CARDS, card_name
        from resources import build_artifacts

        card = UPath(build_artifacts().root) / CARDS / card_name(champion.version)
        print(
            f"\nmodel card of the champion {champion.version}: {card if card.exists() else 'not written yet (materialize champion_model)'}"
        )
    print()
    print("recent decisions (newest first):")
    for e in registry.events(args.events):
        if e["action"] in ("registered", "exported", "parity_passed", "retrained") and not args.all:
            continue
        print(f"  {e['at'][:19]}  {e['action']:12s} {e['version'] or '-':20s} by {e['actor']}: {e['reason']}")
    return 0


def cmd_challenger(args: argparse.Namespace) -> int:
    """List, set or clear the challengers scored in shadow (and in the canary arm)."""
    from resources import RegistryError, build_registry

    registry = build_registry(resolve_env=True)
    try:
        if args.challenger_action == "set":
            registry.set_challenger(args.version, actor=args.by, reason=args.reason)
        elif args.challenger_action == "clear":
            registry.clear_challenger(args.version, actor=args.by, reason=args.reason)
    except RegistryError as exc:
        print(f"churn challenger: {exc}", file=sys.stderr)
        return 2
    if args.challenger_action in ("set", "clear"):
        from lib.settings import load_settings
        from resources import build_tracker

        # MLflow's `challenger` alias follows the registry when tracking is on; a failure is said, never fatal.
        aliases = build_tracker(load_settings(), resolve_env=True).mirror_aliases(registry, lambda text: print(text, file=sys.stderr))
        if "mlflow_aliases" in aliases:
            print(f"MLflow aliases: {aliases['mlflow_aliases']}")
    champion = registry.champion()
    print(f"champion: {champion.version if champion else 'none'}; previous champion: {registry.previous_champion() or 'none'}")
    challengers = registry.challengers()
    print("challengers (scored in shadow; the first serves the canary share):" if challengers else "no challenger")
    for v in challengers:
        print(f"  {v.version:20s} {v.kind:9s} backtest AUC {v.metrics.get('backtest_roc_auc', float('nan')):.4f}")
    blocked = sorted(registry.auto_blocked())
    if blocked:
        print(f"rolled back by the policy, never promoted by it again: {', '.join(blocked)}")
    return 0


def _verify_registry(registry: Any) -> int:
    from resources import build_artifacts

    events, head = registry.chain()
    versions = registry.versions()
    problems = registry.verify(build_artifacts())
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems:
        print(f"registry verify: {len(problems)} problem(s) in {len(events)} events and {len(versions)} versions")
        return 1
    seq, digest = head or (0, "-")
    print(
        f"registry verify: OK: {len(events)} events chained unbroken (head {seq}, sha256 {digest}); the champion, "
        f"{len(versions)} versions, the API keys and the erasures agree with the chain; every artifact matches its sha256"
    )
    keyed = [e["seq"] for e in events if e.get("mac")]
    if registry.chain_key:
        print(f"chain key: every event from {keyed[0] if keyed else '-'} on carries a valid MAC")
    elif keyed:
        print("the chain is keyed but CHURN_CHAIN_KEY is not set here: the MACs were not checked")
    else:
        print("unkeyed chain: set CHURN_CHAIN_KEY so that an event appended without the key is found (docs/security.md)")
    if registry.chain_anchor:
        print(f"anchor: the chain agrees with the anchor at {registry.chain_anchor}")
    else:
        print(
            "no anchor (CHURN_CHAIN_ANCHOR): keep the head hash somewhere else; a later verify that ends at a different hash "
            "for the same event means history was rewritten"
        )
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    from lib.governance import os_identity
    from resources import build_registry
    from resources.registry import RegistryError

    registry = build_registry(resolve_env=True)
    if args.action == "list":
        keys = registry.api_keys(active_only=False)
        for k in keys:
            state = f"revoked {k['revoked_at']:%Y-%m-%d %H:%M}" if k["revoked_at"] else "active"
            print(
                f"{k['name']:24s} {k['key_id']}  scopes {k['scopes']:16s} created {k['created_at']:%Y-%m-%d %H:%M} by {k['created_by']}  {state}"
            )
        if not keys:
            print("no API keys yet: churn apikey create NAME --scope predict")
        return 0
    try:
        if args.action == "create":
            token = registry.create_api_key(args.name, args.scope or ["predict"], actor=os_identity())
            # The one time the key exists in clear: on stdout for the caller to store; not logged, not stored.
            print(token)
            print(
                f"(key {args.name!r}: shown once; the registry keeps only a salted digest. Send it as Authorization: Bearer <key>)",
                file=sys.stderr,
            )
            return 0
        revoked = registry.revoke_api_key(args.name, actor=os_identity())
    except (RegistryError, ValueError) as exc:
        print(f"churn apikey: {exc}", file=sys.stderr)
        return 2
    if not revoked:
        print(f"churn apikey: no active key named {args.name!r}", file=sys.stderr)
        return 1
    print(
        f"revoked {revoked} key(s) named {args.name!r}; the service stops accepting it within its reload interval (CHURN_SERVICE_RELOAD_SECONDS)"
    )
    return 0


def cmd_artifacts_sweep(args: argparse.Namespace) -> int:
    from resources import build_artifacts, build_registry, registry_references, sweep

    store, registry = build_artifacts(), build_registry(resolve_env=True)
    found = sweep(store, registry_references(registry.versions()), older_than=dt.timedelta(hours=args.older_than_hours), apply=args.apply)
    verb = "removed" if args.apply else "would remove"
    for f in found:
        print(f"{verb}: {f.uri}  ({f.size_bytes:,} bytes, {f.age_hours:.1f} h old): {f.reason}")
    total = sum(f.size_bytes for f in found)
    print(
        f"{verb} {len(found)} file(s), {total:,} bytes, under {store.root}"
        + ("" if args.apply or not found else "; run again with --apply to delete them")
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """churn registry, churn apikey, churn artifacts."""
    reg = sub.add_parser("registry", help="list model versions, the champion and recent promotion decisions")
    reg.add_argument(
        "action",
        nargs="?",
        choices=["list", "verify"],
        default="list",
        help="verify: check the event hash chain and every artifact's sha256",
    )
    reg.add_argument("--events", type=int, default=20, help="how many recent registry events to read")
    reg.add_argument("--all", action="store_true", help="also show registrations, exports and passed parity checks")
    reg.set_defaults(func=cmd_registry)

    ch = sub.add_parser("challenger", help="the challengers scored in shadow beside the champion: list, set or clear (who and why)")
    ch_sub = ch.add_subparsers(dest="challenger_action")
    ch.set_defaults(func=cmd_challenger, challenger_action="list")
    for action in ("set", "clear"):
        p = ch_sub.add_parser(action, help=f"{action} a challenger (recorded in the registry with who and why)")
        p.add_argument("version")
        p.add_argument("--by", required=True, help="who decides (recorded)")
        p.add_argument("--reason", required=True, help="why (recorded)")
        p.set_defaults(func=cmd_challenger)
    ch_sub.add_parser("list", help="the active challengers").set_defaults(func=cmd_challenger)

    key = sub.add_parser("apikey", help="API keys of the scoring service: create (printed once), revoke, list")
    key_sub = key.add_subparsers(dest="action", required=True)
    create = key_sub.add_parser("create", help="a new key; the key is printed once and only its salted digest is stored")
    create.add_argument("name", help="who the key is for (letters, digits, . _ -): recorded with every prediction it asks for")
    create.add_argument(
        "--scope",
        action="append",
        choices=["predict", "metrics"],
        help="predict: POST /predict; metrics: /metrics and /docs (repeatable; default predict)",
    )
    create.set_defaults(func=cmd_apikey)
    revoke = key_sub.add_parser("revoke", help="revoke every active key of this name")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_apikey)
    key_sub.add_parser("list", help="keys by name, scope and state (never the keys)").set_defaults(func=cmd_apikey)

    art = sub.add_parser("artifacts", help="maintain the artifact store")
    art_sub = art.add_subparsers(dest="action", required=True)
    sw = art_sub.add_parser(
        "sweep", help="list (or with --apply delete) model files no registry version refers to, e.g. left by a killed training run"
    )
    sw.add_argument(
        "--older-than-hours",
        type=float,
        default=24.0,
        help="only files at least this old: keeps what a running training has not registered yet",
    )
    sw.add_argument("--apply", action="store_true", help="delete them (default: only list)")
    sw.set_defaults(func=cmd_artifacts_sweep)
