"""Prometheus metrics of one service process (never the multiprocess files feast switches on)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml_assets.service.holder import ChampionHolder


class Metrics:
    def __init__(self, holder: ChampionHolder) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, values
        from prometheus_client.core import GaugeMetricFamily

        # Importing feast sets PROMETHEUS_MULTIPROC_DIR (a side effect of its
        # metrics module), which switches metrics created afterwards to shared
        # files keyed by pid. This service is one process with its own counts.
        values.ValueClass = values.MutexValue
        self.registry = CollectorRegistry()
        self.requests = Counter("churn_requests", "HTTP requests by path and status.", ["path", "status"], registry=self.registry)
        self.latency = Histogram(
            "churn_request_seconds",
            "Request latency by path.",
            ["path"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.store_errors = Counter("churn_online_store_errors", "Online store reads that failed or timed out.", registry=self.registry)
        self.scored = Counter("churn_predictions", "Ids answered, by result.", ["result"], registry=self.registry)
        self.refused = Counter("churn_refused", "Requests refused before scoring, by reason.", ["reason"], registry=self.registry)
        self.recorded = Counter("churn_prediction_records", "Predictions written to prediction_log.", registry=self.registry)
        self.record_dropped = Counter(
            "churn_prediction_records_dropped", "Prediction records dropped (database unreachable too long).", registry=self.registry
        )

        class ModelInfo:
            """The model in use, read from the holder at scrape time (never stale)."""

            def collect(self):
                family = GaugeMetricFamily("churn_model_info", "The champion model version in use (value 1).", labels=["version", "kind"])
                if holder.current is not None:
                    family.add_metric([holder.current.version, holder.current.kind], 1.0)
                yield family

        self.registry.register(ModelInfo())
