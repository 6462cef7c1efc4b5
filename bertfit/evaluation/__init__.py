"""Metrics with confidence intervals, scoring a run, comparing runs."""
