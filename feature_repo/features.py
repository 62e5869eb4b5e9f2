"""The churn project's Feast objects, for the `feast` CLI (`feast -c feature_repo apply|plan|feature-views list`).

The pipeline registers the same objects itself (asset `feature_definitions`);
this file only lets the CLI build them from the same code. The lake root comes
from the settings exactly as the code location reads it.
"""

from lib.feature_store import definitions
from lib.settings import settings

customer, customer_features_lake, customer_features, churn_model = definitions(settings().deployment.lake)
