"""The pipeline run the way a Kubernetes pod runs it: uid 10001, a read-only tree, only /tmp writable, production backends.

A private mount namespace (`unshare --mount`, root only; nothing here is seen
outside it) gives the process what the Helm values give a run or step pod:

- the repository (code and virtualenv, the image's /opt/dagster/app) and the
  Python it runs on mounted read-only; everything under /root hidden except
  that Python;
- an empty, writable /tmp (the pod's emptyDir), and /var/tmp read-only;
- uid/gid 10001, no capabilities, no new privileges (`setpriv`);
- exactly the environment the Dockerfile, the Helm values (user deployment
  `env`) and the `churn-secrets` secret provide, with the values' own object
  store URLs (`s3://churn-lake/...`) served by the S3 test server, PostgreSQL
  for the warehouse, the model registry and Feast's registry, Redis for the
  online store.

It then runs the daily job's and the training job's assets in process
(`churn run`: ingest, validation, features, Feast, both models, ONNX, champion,
scoring, drift, one drift-sensor evaluation). What is not the same as a
cluster: no kubelet or scheduler, the Dagster instance is SQLite in /tmp (the
chart's is PostgreSQL), and the steps run in one process instead of one pod
each (each step pod gets the same filesystem and environment).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from ml_assets_tests.conftest import PG_URL, S3Server

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
POD_UID = 10001
# Mount namespaces and setpriv need root; CI and the development machine run as root.
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"), reason="needs root, unshare and setpriv"
)

SANDBOX = r"""
set -eu
W="$1"; shift
# Everything below happens in this private namespace only.
mount --make-rprivate /
keep=0
for p in $KEEP; do
    mkdir -p "$W/.keep/$keep"; mount --bind "$p" "$W/.keep/$keep"; keep=$((keep + 1))
done
# The pod's /tmp is an empty emptyDir: the only writable place.
mount --rbind "$W" /tmp
mount -t tmpfs -o ro,size=1m tmpfs /var/tmp
# /root is private (mode 700) here: hide it, and put back only what the process needs, read-only.
mount -t tmpfs -o mode=755,size=1m tmpfs /root
keep=0
for p in $KEEP; do
    mkdir -p "$p"; mount --bind "/tmp/.keep/$keep" "$p"; mount -o remount,bind,ro "$p"; keep=$((keep + 1))
done
chmod 700 /tmp/.keep
cd "$REPO"
exec setpriv --reuid="$POD_UID" --regid="$POD_UID" --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
"""


def _image_env() -> dict[str, str]:
    """The Dockerfile's ENV lines (the image's environment)."""
    env: dict[str, str] = {}
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def _values_env() -> dict[str, str]:
    """The user deployment's `env` in deploy/helm/values.yaml (what the chart gives the code location, its runs and steps)."""
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    return {e["name"]: str(e["value"]) for e in deployment["env"]}


def _run_as_pod(work: Path, env: dict[str, str], *argv: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    base = Path(sys.base_prefix).resolve()
    keep = [str(ROOT), str(base)] if str(base).startswith("/root/") else [str(ROOT)]
    if str(ROOT).startswith("/root/") and len(keep) == 1:
        keep.append(str(base))
    outer = {"PATH": os.environ["PATH"], "KEEP": " ".join(keep), "REPO": str(ROOT), "POD_UID": str(POD_UID)}
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", SANDBOX, "sandbox", str(work), "env", "-i"]
    command += [f"{k}={v}" for k, v in env.items()] + list(argv)
    return subprocess.run(command, env=outer, capture_output=True, text=True, timeout=timeout, check=False)


def _pod_env(s3: S3Server, schema: str, project: str) -> dict[str, str]:
    image = _image_env()
    return {
        # The image (Dockerfile ENV) with the commit a build records.
        **image,
        "CHURN_CODE_VERSION": "0123456789ab",
        "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/home/churn",  # the image user's home, which does not exist
        # The Helm values' env, object-store URLs included.
        **_values_env(),
        # The churn-secrets secret.
        "CHURN_WAREHOUSE_URL": PG_URL,
        "CHURN_SOURCE_SCHEMA": schema,
        "CHURN_REGISTRY_URL": PG_URL,
        "CHURN_REGISTRY_SCHEMA": schema,
        "CHURN_FEAST_REGISTRY_URL": PG_URL,
        "CHURN_FEAST_REDIS_URL": "127.0.0.1:6379",
        "CHURN_ERASURE_KEY": "the-pod-test-erasure-secret",
        "CHURN_FEAST_PROJECT": project,
        **s3.env(),
        # The problem's settings (a config map in a real deployment): a short history so the test stays quick.
        "CHURN_SETTINGS_FILE": "none",
        "CHURN_PARTITIONS_START": "2024-09-01",
        "CHURN_MIN_HISTORY_DAYS": "45",
        "CHURN_LABEL_HORIZON_DAYS": "14",
        "DAGSTER_HOME": "/tmp/dagster_home",  # noqa: S108 (the pod's /tmp, an emptyDir inside the sandbox)
    }


def _pod_workdir(tmp_path: Path) -> Path:
    """The pod's /tmp, with the instance configuration the chart renders from the values (telemetry, compute logs);
    its storage is SQLite here instead of the chart's PostgreSQL."""
    from ml_assets_tests.system.test_helm_values import VALUES, render_instance

    work = tmp_path / "pod-tmp"
    (work / "dagster_home").mkdir(parents=True)
    rendered = render_instance(yaml.safe_load(VALUES.read_text()))
    instance = {k: rendered[k] for k in ("telemetry", "compute_logs") if k in rendered}
    (work / "dagster_home" / "dagster.yaml").write_text(yaml.safe_dump(instance))
    for path in (work, work / "dagster_home"):
        os.chown(path, POD_UID, POD_UID)
    tmp_path.chmod(0o755)
    return work


@needs_root
def test_both_jobs_run_as_a_pod_with_postgres_redis_and_s3(s3: S3Server, pg_schema: str, tmp_path: Path) -> None:
    import datetime as dt

    import sqlalchemy as sa

    from lib.datagen import GeneratorConfig, generate_transactions
    from resources import SqlWarehouse

    # The values' own bucket; the warehouse table in its own PostgreSQL schema.
    try:
        s3.client().create_bucket(Bucket="churn-lake")
    except s3.client().exceptions.BucketAlreadyOwnedByYou:
        pass
    source = SqlWarehouse(url=PG_URL, db_schema=pg_schema)
    source.create_table(replace=True)
    source.append(generate_transactions(GeneratorConfig(start=dt.date(2024, 9, 1), end=dt.date(2025, 1, 20), customers=300, seed=4)))
    project = f"pod_{uuid.uuid4().hex[:8]}"
    work = _pod_workdir(tmp_path)
    env = _pod_env(s3, pg_schema, project)
    assert env["CHURN_DEPLOYMENT"] == "kubernetes" and env["CHURN_LAKE_ROOT"].startswith("s3://churn-lake/")

    run = _run_as_pod(work, env, "python", "-m", "ml_assets.cli", "run", "--end", "2025-01-20", "--score-days", "3")
    assert run.returncode == 0, f"the pod-shaped run failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    assert "champion" in run.stdout

    # Nothing was written outside the pod's /tmp: no file anywhere on this filesystem belongs to the pod's uid
    # except under its emptyDir (a write into the read-only tree would have failed the run, see the next test).
    find = shutil.which("find") or "/usr/bin/find"
    stray = subprocess.run(  # noqa: S603 (fixed argv)
        # The host's /tmp is pruned: inside the sandbox it is replaced by the pod's own, so nothing there is reachable.
        [find, "/", "-xdev", "-path", "/tmp", "-prune", "-o", "-uid", str(POD_UID), "-print"],  # noqa: S108
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert stray == [], stray

    # The state went where the production settings point: lake and artifacts in the bucket, models in PostgreSQL.
    keys = s3.keys("churn-lake")
    for prefix in ("lake/raw_transactions/", "lake/customer_features/", "lake/batch_predictions/", "artifacts/models/onnx/"):
        assert any(k.startswith(prefix) for k in keys), prefix
    engine = sa.create_engine(PG_URL)
    versions = sa.Table("model_versions", sa.MetaData(schema=pg_schema), autoload_with=engine)
    with engine.connect() as conn:
        champions = conn.execute(sa.select(sa.func.count()).select_from(versions).where(versions.c.status == "champion")).scalar()
        codes = conn.execute(sa.select(versions.c.code_version).distinct()).scalars().all()
    engine.dispose()
    assert champions == 1 and codes == ["0123456789ab"]
    # In the pod, the generated Feast file went under the data folder in /tmp, not into the image's feature_repo.
    assert (work / "churn" / "feast" / "repo" / "feature_store.yaml").exists()
    assert (
        not (ROOT / "feature_repo" / "feature_store.yaml").exists()
        or "churn_" not in (ROOT / "feature_repo" / "feature_store.yaml").read_text()
    )


@needs_root
def test_the_pod_sandbox_refuses_a_write_into_the_read_only_tree(s3: S3Server, tmp_path: Path) -> None:
    """The check above can fail: a code path that writes into the image's tree (here Feast's file, pointed at the
    repository's feature_repo) stops with a read-only filesystem error in the same sandbox."""
    work = _pod_workdir(tmp_path)
    env = {**_pod_env(s3, "public", "pod_refused"), "CHURN_FEAST_REPO": str(ROOT / "feature_repo")}
    code = "from resources import build_feature_store; build_feature_store().write_config()"
    run = _run_as_pod(work, env, "python", "-c", code, timeout=120)
    assert run.returncode != 0 and "Read-only file system" in run.stderr, run.stderr[-2000:]
    # And writing to the pod's /tmp works in the same sandbox.
    ok = _run_as_pod(work, env, "python", "-c", "open('/tmp/probe', 'w').write('x')", timeout=60)
    assert ok.returncode == 0 and (work / "probe").read_text() == "x"
