"""Hypothesis property suite: every solver x gradient-backend pair checked against references."""
