"""The compute engine as a Dagster resource: polars in the step's process, or a Spark session (`compute.engine`).

Where the session comes from is configuration only: a Spark Connect endpoint
(`sc://host:15002`, a secret since it may carry a token, so it arrives as
`dg.EnvVar`), or a master URL (`local[*]` for tests, `spark://`, `yarn`,
`k8s://`) with any further Spark settings. `pyspark` is imported when a step
first asks for the session: loading the code location, and every run on the
polars engine, never imports it (the `spark` extra is optional).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from lib.settings import set_library_defaults

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# What every session of this project needs, whatever the cluster: timestamps without a time zone (the lake's
# naive UTC instants read and written as they are) and UTC wherever Spark still converts, Arrow for the
# per-partition scoring, and no lost precision in the parquet timestamps the polars path writes.
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.ansi.enabled": "false",
}
# Defaults for one machine (tests, `local[*]`): small shuffles, quiet UI. A cluster's own spark_conf overrides them.
LOCAL_DEFAULTS: dict[str, str] = {
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "2g",
}


class SparkNotInstalledError(RuntimeError):
    """compute.engine is spark but pyspark is not installed here."""


class ComputeResource(dg.ConfigurableResource):
    """Which engine runs the heavy stages (compute.engine) and, for spark, the session they run on
    (compute.spark_master, compute.spark_remote, compute.spark_conf)."""

    engine: Literal["polars", "spark"] = Field(default="polars", description="polars: in the step's process; spark: on the session.")
    master: str = Field(default="local[*]", description="Spark master URL, used when no Spark Connect endpoint is set.")
    remote: str | None = Field(default=None, description="Spark Connect endpoint (sc://host:15002); wins over master.")
    conf: dict[str, str] = Field(default_factory=dict, description="Further Spark configuration (spark.* keys).")
    app_name: str = Field(default="churn-ml-assets", description="The application name the cluster shows.")

    _session: Any = PrivateAttr(default=None)

    @property
    def spark(self) -> bool:
        return self.engine == "spark"

    def session(self) -> SparkSession:
        """The session, created on first use in this process (a Spark Connect client, or a driver here)."""
        if self._session is not None:
            return self._session
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise SparkNotInstalledError(
                "compute.engine is spark (CHURN_COMPUTE_ENGINE) but pyspark is not installed: "
                "pip install -e '.[spark]' (Java 17 is needed for a local driver), or set CHURN_COMPUTE_ENGINE=polars"
            ) from None
        builder = SparkSession.builder.appName(self.app_name)
        if self.remote:
            builder = builder.remote(self.remote)
        else:
            builder = builder.master(self.master)
            local = LOCAL_DEFAULTS if self.master.startswith("local") else {}
            if local:
                # On one machine the Python workers are this interpreter (its packages), not whichever python3 is first
                # on PATH: pyspark reads only the variable for that.
                set_library_defaults({"PYSPARK_PYTHON": sys.executable})
            for key, value in {**local, **self.conf}.items():
                builder = builder.config(key, value)
        for key, value in REQUIRED_CONF.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        # getOrCreate may hand back a session made earlier with other settings: the required ones are set again.
        for key, value in REQUIRED_CONF.items():
            session.conf.set(key, value)
        self._session = session
        return session

    def describe(self) -> str:
        """Where the work runs, for metadata and logs (never the Connect URL itself: it may carry a token)."""
        if not self.spark:
            return "polars, in the step's process"
        return "Spark Connect endpoint (compute.spark_remote)" if self.remote else f"Spark master {self.master}"
