"""Shared test fixtures.

Sections (keep each helper in its own section):
- tiny classifiers: small networks built in memory for the engine's tests;
- app pages: AppTest helpers for the pages' tests.
"""
from __future__ import annotations

# --- tiny classifiers --------------------------------------------------------------------------


# --- app pages ---------------------------------------------------------------------------------
