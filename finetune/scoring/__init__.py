"""Scores of predictions: the headline metrics (metrics.py) and their bootstrap intervals and paired comparisons
(uncertainty.py)."""
