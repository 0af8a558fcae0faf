"""The schema of params.yaml (params.py) and params.yaml written from a short config (files.py)."""
