"""Spark forms of the heavy stages (compute.engine: spark). Imports pyspark: only a step on the Spark engine imports these modules."""
