"""Tests of the asset stages in ml_assets/assets/, through the real assets."""
