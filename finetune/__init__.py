"""Shared library code for the pipeline's stages (stages/*.py).

Every module here is listed as a dvc.yaml dependency of each stage that imports it (checked by
tests/test_dvc_yaml.py), so editing one reruns exactly the stages that use it.
"""
