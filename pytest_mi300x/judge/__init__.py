"""Deciding: the one verdict rule (verdict.py), a test's repetitions against its stored
baseline (gate.py, baselines.py), two result folders against each other (compare.py), and
change points in a metric's history (changepoints.py)."""
