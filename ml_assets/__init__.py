"""Customer-churn ML pipeline as Dagster software-defined assets."""

import warnings

# The one place warnings are configured. Single-run backfills, partition
# mappings that tolerate days before the first partition and a few other
# APIs the project relies on knowingly are beta in Dagster 1.13; their
# warnings ("... is currently in beta ...") would only be noise at every load
# and every CLI run. Matched by message so that importing the framework-free
# `lib` does not import Dagster.
warnings.filterwarnings("ignore", message=r".* is currently in beta")
