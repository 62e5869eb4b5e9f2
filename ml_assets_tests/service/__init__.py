"""Tests of the online scoring service over real HTTP."""
