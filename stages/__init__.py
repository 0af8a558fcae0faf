"""One module per dvc.yaml stage; each has `run(params)` and a CLI (`python -m stages.NAME --help`)."""
