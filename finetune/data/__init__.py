"""Data as the stages read it: users' tables (tables.py), where rows come from (sources.py), labels and heads (heads.py),
images as data (images.py), prepared features as a dataset (features.py)."""
