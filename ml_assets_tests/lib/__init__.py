"""Tests of the pure code in lib/: rules, math and decisions on hand-built data."""
