"""The assets of the graph, one module per stage: thin Dagster wiring around the pure code in lib/."""
