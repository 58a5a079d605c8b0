"""Evaluation: running an evaluation of a trained run, scoring samples files, provenance, metrics,
tables and plots."""
