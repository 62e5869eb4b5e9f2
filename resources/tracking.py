"""MLflow experiment tracking, optional (`pip install -e '.[mlflow]'`, then set CHURN_MLFLOW_TRACKING_URI).

Every training run logs a parent run (the Dagster run: id, link, code
version, data window, row counts), a nested run per candidate model (its
parameters, test and out-of-time metrics, plots, and later its ONNX artifact
with the sha256), and under LightGBM's a run per search trial. Promotions,
rollbacks and challengers move the registered model's aliases `champion` and
`challenger`. The rules are in `lib/tracking.py`.

Tracking never fails a step: when the server cannot be reached or refuses a
call, the step's metadata and a warning in its log say what was not logged.
The client is imported only inside these methods, so loading the code
location never imports MLflow.
"""

from __future__ import annotations

import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from lib import tracking as rules
from lib.settings import set_library_defaults
from resources.registry.records import current_code_version

NOT_INSTALLED = "the mlflow extra is not installed (pip install -e '.[mlflow]')"


@dataclass
class TrackedModel:
    """What one candidate model logs: the figures its asset computed, nothing recomputed for MLflow."""

    version: str
    kind: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    data_window: Mapping[str, Any]
    artifact_sha256: str
    plots: Mapping[str, bytes] = field(default_factory=dict)  # file name (no suffix) -> PNG, the plots on the materialization
    trials: list[Mapping[str, Any]] = field(default_factory=list)  # the hyperparameter search, one run each
    curve: list[Mapping[str, float]] = field(default_factory=list)  # per-epoch metrics (step = epoch)


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached or the client is missing: nothing is logged, the step goes on."""


class ExperimentTracker(dg.ConfigurableResource):
    """Logs training runs to MLflow and mirrors the registry's champion and challenger as aliases; off without a URI."""

    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI (deployment.mlflow_tracking_uri; an EnvVar, it may carry credentials); none: off."
    )
    experiment: str = Field(default="churn", description="MLflow experiment of the training runs (deployment.mlflow_experiment).")
    registered_model: str = Field(default="churn", description="MLflow registered model whose aliases mirror the registry.")
    ui_url: str = Field(default="http://127.0.0.1:3000", description="The Dagster UI, for the run link tagged on every MLflow run.")
    code_version: str | None = Field(
        default=None, description="Code version tagged on the parent run (deployment.code_version); none: git."
    )
    timeout_seconds: float = Field(default=10.0, description="Per request to the tracking server; an unreachable server costs this once.")

    @property
    def enabled(self) -> bool:
        return bool(self.tracking_uri)

    # --- what the assets call ------------------------------------------------------------------------------------

    def log_candidate(self, context: dg.AssetExecutionContext, model: TrackedModel, registry: Any) -> dict[str, Any]:
        """The candidate's nested run under this Dagster run's parent, its trials under it; linked in the registry row."""

        def work(client: Any) -> dict[str, Any]:
            experiment = self._experiment(client)
            parent = self._parent(client, experiment, context, model)
            tags = {rules.ROLE: "model", rules.CHURN_KIND: model.kind, rules.CHURN_VERSION: model.version}
            run = self._create(client, experiment, model.version, parent, context, tags)
            self._batch(client, run, params=dict(model.params), metrics=model.metrics, tags={rules.ARTIFACT_SHA256: model.artifact_sha256})
            for step, point in enumerate(model.curve):
                self._batch(client, run, metrics=point, step=step)
            if model.plots:
                with tempfile.TemporaryDirectory() as folder:
                    for name, png in model.plots.items():
                        (Path(folder) / f"{rules.key(name).replace('/', '_')}.png").write_bytes(png)
                    client.log_artifacts(run, folder, "plots")
            for i, trial in enumerate(model.trials):
                params, metrics = rules.trial_params(trial)
                child = self._create(client, experiment, f"{model.version} trial {i + 1}", run, context, {rules.ROLE: "trial"})
                self._batch(client, child, params=params, metrics=metrics)
                client.set_terminated(child, "FINISHED")
            client.set_terminated(run, "FINISHED")
            # The parent spans the run's steps; each finishes it again, so it never stays "running" after the last one.
            client.set_terminated(parent, "FINISHED")
            registry.record_tracking(model.version, run, context.run.run_id)
            logged = f"{len(model.params)} params, {len(rules.numeric_metrics(model.metrics))} metrics, {len(model.trials)} trials, "
            return {
                "mlflow": f"logged: {logged}{len(model.plots)} plots, {len(model.curve)} epochs",
                "mlflow_run_id": run,
                "mlflow_run_url": dg.MetadataValue.url(self._run_url(experiment, run)),
            }

        lost = f"the run of {model.version}: params, metrics, {len(model.trials)} trials, {len(model.plots)} plots"
        return self._guarded(context.log.warning, work, lost)

    def log_onnx(self, context: dg.AssetExecutionContext, version: str, onnx: bytes, sha256: str) -> dict[str, Any]:
        """The ONNX artifact (with its sha256 as a tag) on the version's run, and a version of the registered model."""

        def work(client: Any) -> dict[str, Any]:
            experiment = self._experiment(client)
            run = self._model_run(client, experiment, version)
            if run is None:  # trained before tracking was on: a run of its own under this Dagster run
                parent = self._parent(client, experiment, context, None)
                run = self._create(client, experiment, version, parent, context, {rules.ROLE: "model", rules.CHURN_VERSION: version})
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.onnx"
                path.write_bytes(onnx)
                client.log_artifact(run, str(path), "onnx")
            client.set_tag(run, rules.ONNX_SHA256, sha256)
            model_version = self._model_version(client, version, run, sha256)
            return {"mlflow": f"ONNX logged to run {run}, model version {model_version}", "mlflow_run_id": run}

        return self._guarded(context.log.warning, work, f"the ONNX artifact of {version}")

    def mirror_aliases(self, registry: Any, warn: Callable[[str], None]) -> dict[str, Any]:
        """Aliases `champion` and `challenger` set to what the registry says now (lib.tracking.alias_plan)."""

        def work(client: Any) -> dict[str, Any]:
            self._registered(client)
            tracked = {}
            for mv in client.search_model_versions(f"name='{self.registered_model}'"):
                if churn := (mv.tags or {}).get(rules.CHURN_VERSION):
                    tracked[churn] = str(mv.version)
            current = dict(client.get_registered_model(self.registered_model).aliases or {})
            champion = registry.champion()
            challengers = [v.version for v in registry.challengers()]
            plan = rules.alias_plan(champion.version if champion else None, challengers, tracked, {k: str(v) for k, v in current.items()})
            for step, alias, target in plan:
                if step == "set":
                    client.set_registered_model_alias(self.registered_model, alias, target)
                else:
                    client.delete_registered_model_alias(self.registered_model, alias)
            return {"mlflow_aliases": ", ".join(f"{s} {a}" + (f" -> {t}" if t else "") for s, a, t in plan) or "unchanged"}

        return self._guarded(warn, work, "the aliases champion and challenger")

    # --- plumbing ------------------------------------------------------------------------------------------------

    def _guarded(self, warn: Callable[[str], None], work: Callable[[Any], dict[str, Any]], lost: str) -> dict[str, Any]:
        """Run ``work`` with a client; on any failure, say in one warning and the returned metadata what was not logged."""
        if not self.enabled:
            return {}
        try:
            return work(self._client())
        except Exception as exc:  # noqa: BLE001 (tracking must never fail a step: what was lost is reported instead)
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            text = f"not logged to MLflow at {rules.safe_uri(self.tracking_uri or '')}: {lost} ({type(exc).__name__}: {reason})"
            warn(text)
            return {"mlflow": text}

    def _client(self) -> Any:
        uri = self.tracking_uri or ""
        if uri.startswith(("http://", "https://")):
            self._probe(uri)
        # Few, short retries: the default (7 retries, exponential backoff) would hold a step for minutes.
        client = {"MAX_RETRIES": "1", "BACKOFF_FACTOR": "1", "TIMEOUT": str(int(self.timeout_seconds))}
        set_library_defaults({f"MLFLOW_HTTP_REQUEST_{name}": value for name, value in client.items()})
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise TrackingUnavailable(NOT_INSTALLED) from exc
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def _probe(self, uri: str) -> None:
        """One short request before any logging: an unreachable server costs ``timeout_seconds`` once, not per call."""
        try:
            # The configured tracking server (a setting), not client input.
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=self.timeout_seconds):  # noqa: S310
                pass
        except OSError as exc:
            raise TrackingUnavailable(f"the server does not answer ({type(exc).__name__})") from exc

    def _experiment(self, client: Any) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(self.experiment))
        except Exception:  # noqa: BLE001 (created by a step that raced this one: read it back)
            return str(client.get_experiment_by_name(self.experiment).experiment_id)

    def _parent(self, client: Any, experiment: str, context: dg.AssetExecutionContext, model: TrackedModel | None) -> str:
        """This Dagster run's parent run: found by its tag, or created; of two created at once, both steps keep the oldest."""
        run_id = context.run.run_id
        query = f"tags.`{rules.DAGSTER_RUN_ID}` = '{_quoted(run_id)}' and tags.`{rules.ROLE}` = 'training'"

        def parents() -> list[dict[str, Any]]:
            runs = client.search_runs([experiment], filter_string=query, max_results=50)
            return [{"run_id": r.info.run_id, "start_time": r.info.start_time} for r in runs]

        if found := rules.parent_of(parents()):
            return found
        created = self._create(
            client, experiment, f"training {run_id[:8]}", None, context, {rules.ROLE: "training", "dagster.job": context.run.job_name}
        )
        params: dict[str, Any] = {"code_version": current_code_version(self.code_version)}
        if model is not None:
            params["data_window"] = dict(model.data_window)
        if context.has_partition_key_range:
            params["partition_window"] = f"{context.partition_key_range.start}..{context.partition_key_range.end}"
        self._batch(client, created, params=params)
        chosen = rules.parent_of(parents()) or created
        if chosen != created:
            client.delete_run(created)
        return chosen

    def _create(self, client: Any, experiment: str, name: str, parent: str | None, context: Any, tags: Mapping[str, str]) -> str:
        all_tags = {
            rules.RUN_NAME: name,
            rules.DAGSTER_RUN_ID: context.run.run_id,
            rules.DAGSTER_RUN_URL: rules.dagster_run_url(self.ui_url, context.run.run_id),
            **tags,
        }
        if tags.get(rules.ROLE) != "training":  # the parent belongs to the whole run, not to the step that created it
            all_tags[rules.DAGSTER_STEP] = context.op_def.name
        if parent:
            all_tags[rules.PARENT] = parent
        return str(client.create_run(experiment, tags=all_tags).info.run_id)

    def _batch(
        self,
        client: Any,
        run: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        client.log_batch(
            run,
            metrics=[Metric(k, v, now, step) for k, v in rules.numeric_metrics(metrics or {}).items()],
            params=[Param(k, v) for k, v in rules.run_params(params or {}).items()],
            tags=[RunTag(k, v) for k, v in (tags or {}).items()],
        )

    def _model_run(self, client: Any, experiment: str, version: str) -> str | None:
        query = f"tags.`{rules.CHURN_VERSION}` = '{_quoted(version)}' and tags.`{rules.ROLE}` = 'model'"
        runs = client.search_runs([experiment], filter_string=query, max_results=1, order_by=["attributes.start_time DESC"])
        return str(runs[0].info.run_id) if runs else None

    def _registered(self, client: Any) -> None:
        try:
            client.get_registered_model(self.registered_model)
        except Exception:  # noqa: BLE001 (absent: created here, with the note that the registry decides)
            try:
                client.create_registered_model(self.registered_model, description=rules.SOURCE_OF_TRUTH)
            except Exception:  # noqa: BLE001 (created by a step that raced this one)
                client.get_registered_model(self.registered_model)

    def _model_version(self, client: Any, version: str, run: str, sha256: str) -> str:
        """The registered model's version for a registry version (one per version: found again on a re-export)."""
        self._registered(client)
        for mv in client.search_model_versions(f"name='{self.registered_model}' and run_id='{_quoted(run)}'"):
            if (mv.tags or {}).get(rules.CHURN_VERSION) == version and (mv.tags or {}).get(rules.ONNX_SHA256) == sha256:
                return str(mv.version)
        source = f"{client.get_run(run).info.artifact_uri}/onnx"
        tags = {rules.CHURN_VERSION: version, rules.ONNX_SHA256: sha256}
        return str(
            client.create_model_version(self.registered_model, source, run_id=run, tags=tags, description=rules.SOURCE_OF_TRUTH).version
        )

    def _run_url(self, experiment: str, run: str) -> str:
        return f"{rules.safe_uri(self.tracking_uri or '').rstrip('/')}/#/experiments/{experiment}/runs/{run}"


def _quoted(value: str) -> str:
    """A value inside an MLflow filter string (run ids and version names: letters, digits, - and _ only)."""
    if not value.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"unexpected characters in {value!r} for an MLflow filter")
    return value
