"""Hyper-parameter search (``bertfit tune``): search spaces, and trials that are normal runs."""
