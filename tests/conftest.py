"""Fixtures: tiny models built from a config at test time (saved, then loaded through the same
from_pretrained path users use), scratch project directories, and the shared end-to-end run.

`make test` runs the suite on 2 pytest-xdist workers. What several tests read (the tiny models, the text
project's first `dvc repro`) is built ONCE per session for all workers: `shared` builds it under a file
lock in the session's common temporary folder; whoever comes second waits and reuses it.
Every process of the suite runs torch single-threaded (OMP_NUM_THREADS=1, inherited by the DVC stages it
starts): the two workers share the 2 cores instead of fighting over them, and equal thread counts keep
runs that are compared bit for bit (flow vs dvc repro, resumed vs uninterrupted) comparable."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported anywhere

import pytest  # noqa: E402

from tests.support.models import (  # noqa: E402
    build_tiny_bert,
    build_tiny_causal_lm,
    build_tiny_chat_lm,
    build_tiny_resnet,
    build_tiny_speech_whisper,
    build_tiny_whisper,
)


def shared(tmp_path_factory, name: str, build: Callable[[Path], object]) -> tuple[Path, object]:
    """(folder, what build returned): build(folder) runs once per session, whichever worker asks first."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    common = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = common / name, common / f"{name}.json"
    with FileLock(str(common / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            done.write_text(json.dumps(build(folder)))
    return folder, json.loads(done.read_text())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return shared(tmp_path_factory, "tiny-bert", build_tiny_bert)[0]


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer (EOS <|endoftext|>), saved like a user's model."""
    return shared(tmp_path_factory, "tiny-llama", build_tiny_causal_lm)[0]


@pytest.fixture(scope="session")
def tiny_chat_lm(tmp_path_factory) -> Path:
    """A 2-layer Llama with ChatML's special tokens and chat template, saved like a user's instruct model."""
    return shared(tmp_path_factory, "tiny-chat-llama", build_tiny_chat_lm)[0]


@pytest.fixture(scope="session")
def tiny_image_model(tmp_path_factory) -> Path:
    """A tiny Hugging Face ResNet (BatchNorm in every block) with its image processor, saved like a user's model."""
    return shared(tmp_path_factory, "tiny-resnet", build_tiny_resnet)[0]


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    """A 2-layer Whisper (width 16, up to 2 s) with its feature extractor, saved like a user's speech model."""
    return shared(tmp_path_factory, "tiny-whisper", build_tiny_whisper)[0]


@pytest.fixture(scope="session")
def tiny_speech_whisper(tmp_path_factory) -> Path:
    """A 2-layer Whisper with a word-level Whisper tokenizer and generation config, saved like a user's speech model."""
    return shared(tmp_path_factory, "tiny-speech-whisper", build_tiny_speech_whisper)[0]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty scratch directory as the current directory, for calling stages' run() in-process."""
    monkeypatch.chdir(tmp_path)
    return tmp_path




@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, tiny_model) -> Path:
    """A scratch directory where ingest, preprocess and train already ran on tiny data (read-only:
    tests copy it with `copy_of`)."""
    import os

    from tests.support.data import make_rows
    from tests.support.params import load, run_stages, tiny_params

    root = tmp_path_factory.mktemp("trained")
    (root / "data/raw").mkdir(parents=True)
    make_rows(150).to_csv(root / "data/raw/tiny.csv", index=False)
    before = os.getcwd()
    os.chdir(root)
    try:
        run_stages("ingest", "preprocess", "train", params=load(tiny_params(tiny_model)))
    finally:
        os.chdir(before)
    return root


@pytest.fixture
def trained_workdir(trained_project, workdir) -> Path:
    import shutil

    shutil.copytree(trained_project, workdir, dirs_exist_ok=True)
    return workdir


@pytest.fixture(scope="session")
def text_repo_snapshot(tmp_path_factory, tiny_model) -> tuple[Path, list[str]]:
    """The tiny text project as a git repo after its first `dvc repro`: (root, the stages that ran). Shared by
    the end-to-end tests, READ ONLY: a test that changes params or code works on copy_repo(root, ...)."""
    from tests.support.data import make_rows
    from tests.support.params import e2e_text_params, render_params
    from tests.support.repos import commit, git_repo, repro, write_project

    def build(root: Path) -> list[str]:
        write_project(root, e2e_text_params(tiny_model), make_rows(150))
        render_params(root)  # as `make pipeline CONFIG=...` writes it
        git_repo(root)
        ran = repro(root)
        commit(root, "first run")
        return ran

    return shared(tmp_path_factory, "text-repo", build)


@pytest.fixture(scope="session")
def lm_repo(tmp_path_factory, tiny_causal_lm) -> tuple[Path, list[str]]:
    """The tiny causal-LM project (6 generated documents, the tiny Llama, LoRA) run once through `dvc repro`, committed:
    (root, the stages that ran). READ ONLY: a test that changes it copies it first (copy_repo)."""
    from tests.support.data import write_lm_corpus
    from tests.support.params import render_params, tiny_lm_params
    from tests.support.repos import commit, git_repo, repro, write_project

    def build(root: Path) -> list[str]:
        write_project(root, tiny_lm_params(tiny_causal_lm))
        write_lm_corpus(root)
        render_params(root)  # configs/lm.yaml holds only what differs: DVC reads every key from the rendered params.yaml
        git_repo(root)
        ran = repro(root)
        commit(root, "first run")
        return ran

    return shared(tmp_path_factory, "lm-repo", build)


@pytest.fixture(scope="session")
def image_repo(tmp_path_factory, tiny_image_model, prefect_harness) -> tuple[Path, dict]:
    """The tiny image project (30 generated images per class, the tiny ResNet) run through the Prefect flow:
    (root, each stage's final state). READ ONLY, like text_repo_snapshot."""
    from tests.support.data import write_image_folder
    from tests.support.params import tiny_image_params
    from tests.support.repos import git_repo, run_flow, write_project

    def build(root: Path) -> dict:
        write_project(root, tiny_image_params(str(tiny_image_model)))
        write_image_folder(root / "data/raw/images", 30)
        git_repo(root)
        return run_flow(root)

    return shared(tmp_path_factory, "image-repo", build)


@pytest.fixture(scope="session")
def image_text_repo(tmp_path_factory, tiny_image_model, tiny_model) -> tuple[Path, list[str]]:
    """The tiny image + text project (generated coloured squares with yes/no questions, the tiny ResNet + the tiny BERT, an
    image-only and a text-only member) run once through `dvc repro`, committed: (root, the stages that ran). READ ONLY."""
    from tests.support.data import write_vqa_table
    from tests.support.params import image_text_params, place
    from tests.support.repos import commit, git_repo, repro, write_project

    def build(root: Path) -> list[str]:
        params = image_text_params(str(tiny_image_model), str(tiny_model), ensemble={"members": {
            "image_only": {"kind": "finetune", "train": {"modalities": ["image"]}}}})
        write_project(root, place(params, root))
        write_vqa_table(root)
        git_repo(root)
        ran = repro(root)
        commit(root, "first run")
        return ran

    return shared(tmp_path_factory, "image-text-repo", build)


# The longest tests first: xdist hands tests out in collection order as workers free up, so a long test collected
# last (the toy task's DAG, the text pipeline's end-to-end tests) would run alone at the end while the other
# worker idles. Image tests come early: gw1 has just built the image run and needs not wait for the text one.
LONGEST_FIRST = ("tests/tasks/text-classification/test_pipeline.py", "tests/tasks/image-classification/test_pipeline.py",
                 "tests/tasks/causal-lm/test_pipeline.py", "tests/tasks/image-text-classification/test_pipeline.py",
                 "tests/flows/test_pipeline.py::test_flow_gives",
                 "tests/tasks/test_registry.py", "tests/flows/test_search.py", "tests/flows/test_cli.py", "tests/test_gpu.py::test_the_gpu_check",
                 "tests/training/test_distributed.py", "tests/stages/test_train.py", "tests/test_team_sharing.py::test_teammates",
                 "tests/flows/test_pipeline_dask.py::test_dask_runs", "tests/test_team_sharing.py::test_a_queued",
                 "tests/flows/test_search_workers.py", "tests/flows/test_deploy.py::test_a_")  # ~28-35 s on a busy 2-core box


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(LONGEST_FIRST))
    items.sort(key=rank)  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def _end_to_end_runs_first(request):
    """With two xdist workers, gw0 builds the text run and gw1 the image run at the very start, side by
    side, so no worker later waits on the other's lock (only when the selected tests need them)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    fixture = {"gw0": "text_repo_snapshot", "gw1": "image_repo"}.get(worker)
    if fixture in wanted:
        request.getfixturevalue(fixture)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the whole session (it takes ~10 s to start)."""
    import os

    os.environ.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):  # 30 s by default: missed once on a 2-core box at load 7
        yield
