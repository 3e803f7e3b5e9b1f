"""Evaluation harness: datasets, the RouteLLM paper's metrics, cost–quality curves, plots.

Needs the ``train`` extra (numpy, pandas, matplotlib); nothing here is imported by
``import tierwise`` or on the routing hot path.
"""
