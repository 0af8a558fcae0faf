"""Fixtures: a tiny BERT built from a config at test time (saved, then loaded through the same
from_pretrained path users use) and a scratch project directory."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import FILLER, WORDS


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for ws in WORDS.values() for w in ws} | set(FILLER)),
             *letters, *(f"##{c}" for c in letters), *".,!?@#'-"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_image_model(tmp_path_factory) -> Path:
    """A tiny Hugging Face ResNet (BatchNorm in every block) with its image processor, saved like a user's model."""
    import torch
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    folder = tmp_path_factory.mktemp("tiny-resnet")
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    torch.manual_seed(0)
    ResNetForImageClassification(config).save_pretrained(folder)
    ConvNextImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]).save_pretrained(folder)
    return folder


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

    from tests.support import load, make_rows, run_stages, tiny_params

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
    from tests.support import commit, git_repo, make_rows, repro, tiny_params, write_project

    root = git_repo(write_project(tmp_path_factory.mktemp("text-repo"), tiny_params(tiny_model), make_rows(150)))
    ran = repro(root)
    commit(root, "first run")
    return root, ran


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the whole session (it takes ~10 s to start)."""
    import os

    os.environ.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield
