"""Customer-churn ML pipeline as Dagster software-defined assets."""

import warnings

# Single-run backfills and partition mappings that tolerate days before the
# first partition are beta in Dagster 1.13; the project relies on them
# knowingly, so their warnings would only be noise at every load.
warnings.filterwarnings("ignore", message=r"Parameter `(backfill_policy|allow_nonexistent_upstream_partitions)`")
