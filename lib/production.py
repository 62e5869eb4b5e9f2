"""Whether settings can run in pods: every place state lives set, none of them local to a pod, the service locked.

Checked by `load_settings` whenever `deployment.mode` is `kubernetes`.
"""

from __future__ import annotations

from pydantic import SecretStr

from lib.settings import VARIABLE, Settings

# What a cluster must provide: every place state lives, none of them local to a pod.
PRODUCTION_URLS = (
    "source.url",
    "deployment.registry_url",
    "deployment.feast_registry_url",
    "deployment.feast_redis_url",
    "deployment.lake_root",
    "deployment.artifact_root",
)


def _plain(value: object) -> str | None:
    if value is None:
        return None
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def production_problems(value: Settings) -> list[str]:
    """Why these settings cannot run in pods: a missing or pod-local location (an SQLite file, a local path) would
    "succeed" into a file that disappears with the pod. Empty when they can."""
    problems = []
    for dotted in PRODUCTION_URLS:
        section, name = dotted.split(".")
        url = _plain(getattr(getattr(value, section), name))
        if not url:
            problems.append(f"{dotted} ({VARIABLE[dotted]}) is not set")
        elif url.startswith(("sqlite:", "file:", "/", ".", "local:")) or ("://" not in url and dotted.endswith("_root")):
            problems.append(f"{dotted} ({VARIABLE[dotted]}) points at a pod-local file or folder")
    if not value.deployment.code_version:
        problems.append(
            "deployment.code_version (CHURN_CODE_VERSION) is not set: build the image with --build-arg CHURN_CODE_VERSION=$(git rev-parse HEAD)"
        )
    if value.deployment.erasure_key is None:
        problems.append(
            "deployment.erasure_key (CHURN_ERASURE_KEY) is not set: without it the hash kept of an erased customer id can be "
            "reversed by trying every id; set a random secret (openssl rand -hex 32) in the churn-secrets secret"
        )
    if not value.deployment.service.require_api_key:
        problems.append(
            "deployment.service.require_api_key (CHURN_SERVICE_REQUIRE_API_KEY) is false: the scoring service would answer anyone "
            "who reaches it; create keys with `churn apikey create NAME --scope predict` instead"
        )
    return problems
