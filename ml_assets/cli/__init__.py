"""Command line: generate source data, describe your table, and run the whole pipeline.

churn generate --start 2024-07-01 --end 2025-06-30 --customers 5000 --drift-date 2025-06-01
churn generate --profile retail --url sqlite:///shop.sqlite --table purchases
churn init --url sqlite:///shop.sqlite --table purchases --horizon-days 90
churn run [--start 2024-01-01] [--end 2025-06-30] [--score-days 30]
churn demo
churn registry [verify]
churn apikey create NAME --scope predict
churn erase CUSTOMER_ID --reason TICKET
churn retention [--apply]
churn artifacts sweep [--older-than-hours 24] [--apply]
churn challenger [set|clear VERSION --by NAME --reason TEXT]
churn scenario rollback
churn report drift DAY

One module per group of commands, each with its `register(sub)`; the commands
import what they need when they run, so `churn --help` loads no ML library.
"""

from __future__ import annotations

import argparse
import sys

from ml_assets.cli import data, init, privacy, registry, report, run, scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="churn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="on a refusal, show the traceback as well as the message")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (data, run, init, registry, privacy, scenario, report):
        module.register(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:
        # A refusal (settings, source, registry) is one clear line and exit status 2; anything else is a bug: traceback.
        if args.debug or not isinstance(exc, _refusals()):
            raise
        print(f"churn {args.command}: {exc}", file=sys.stderr)
        return 2


def _refusals() -> tuple[type[BaseException], ...]:
    """The errors that are refusals with a message for the user (imported only once one was raised)."""
    from lib.settings import SettingsError

    try:
        from resources import FeatureStoreError, RegistryError, SourceSchemaError, SourceUnavailableError
        from resources.registry.chain import ChainKeyMissing
    except ImportError:  # a broken install: show what went wrong, whole
        return (SettingsError,)
    return (SettingsError, RegistryError, ChainKeyMissing, SourceSchemaError, SourceUnavailableError, FeatureStoreError)
