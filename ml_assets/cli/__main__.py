"""`python -m ml_assets.cli`: the same as the `churn` command."""

import sys

from ml_assets.cli import main

sys.exit(main())
