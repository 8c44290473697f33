"""Metrics, the evaluators an experiment lists, and the ``eval`` and ``compare`` commands that score
and compare finished runs (docs/evaluation.md)."""
