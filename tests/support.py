"""Test helpers: small labelled data, tiny-config params, project copies, running tools like a user."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

PROJECT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["stages", "finetune", "flows", "tools", "configs", "dvc.yaml", "params.yaml", "requirements-assets.txt", ".dvcignore", ".dvc/config", ".dvc/.gitignore",
                 ".dvc/plots_template.html",  # written by `make setup`
                 "data/raw/README.md", "models/pretrained/README.md", "reports/search/README.md"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

WORDS = {
    "positive": ["good", "great", "love", "excellent", "happy"],
    "negative": ["bad", "awful", "hate", "terrible", "angry"],
    "neutral": ["okay", "average", "normal", "plain", "usual"],
}
FILLER = ["the", "flight", "service", "was", "today", "my", "car", "phone", "really", "very", "this", "that", "so", "and", "it"]


def make_rows(n: int, seed: int = 0, labels=("negative", "neutral", "positive")) -> pd.DataFrame:
    """Unique short texts whose label is carried by one keyword among filler words."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = labels[len(rows) % len(labels)]
        words = rng.sample(FILLER, rng.randint(3, 7))
        words.insert(rng.randint(0, len(words)), rng.choice(WORDS[label]))
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    return pd.DataFrame(rows)


def build_tiny_bert(folder: Path) -> None:
    """A 2-layer BERT (hidden 32) with a word-level vocabulary of the words make_rows uses, saved to folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for ws in WORDS.values() for w in ws} | set(FILLER)),
             *letters, *(f"##{c}" for c in letters), *".,!?@#'-"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)


LM_TEXT = ("to be or not to be that is the question whether tis nobler in the mind to suffer the slings and arrows of "
           "outrageous fortune or to take arms against a sea of troubles and by opposing end them")


def build_tiny_causal_lm(folder: Path, architecture: str = "llama") -> None:
    """A 2-layer causal LM (llama or gpt2, hidden 32) with a byte-level BPE tokenizer trained on LM_TEXT, whose EOS
    (and BOS, PAD) is <|endoftext|>, saved to folder like a user's model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([LM_TEXT] * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.save_pretrained(folder)
    size, eos = len(fast), fast.eos_token_id
    torch.manual_seed(0)
    if architecture == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=size, n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=eos, eos_token_id=eos))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                             num_key_value_heads=1, max_position_embeddings=128, bos_token_id=eos, eos_token_id=eos,
                                             pad_token_id=eos, tie_word_embeddings=True))
    model.save_pretrained(folder)


def build_tiny_resnet(folder: Path) -> None:
    """A 2-stage Hugging Face ResNet (BatchNorm in every block) and its image processor, saved to folder."""
    import torch
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    torch.manual_seed(0)
    ResNetForImageClassification(config).save_pretrained(folder)
    ConvNextImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]).save_pretrained(folder)


def tiny_params(model: Path, source: str = "data/raw/tiny.csv", **sections) -> dict:
    params = {
        "task": "text-classification",
        "data": {"source": source, "text_column": "text", "label_column": "label", "split_column": None,
                 "keep_labels": None, "confidence_column": None, "min_confidence": None, "max_rows": None,
                 "splits": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1, "on_bad_rows": "error"},
        "preprocess": {"max_length": 32, "padding": "dynamic", "augment": {"copies": 0, "ops": ["delete", "swap"], "prob": 0.1, "seed": 0}},
        "train": {"model": str(model), "trust_remote_code": False, "epochs": 12, "batch_size": 8, "eval_batch_size": 64,
                  "learning_rate": 3e-3, "weight_decay": 0.01, "warmup_ratio": 0.0, "lr_scheduler": "linear", "dropout": None,
                  "eval_steps": None, "logging_steps": 5, "early_stopping": {"metric": "f1_macro", "patience": 0},
                  "seed": 3, "device": "cpu"},
        "evaluate": {"misclassified_rows": 200},
        "ensemble": {"method": "soft_vote", "calibration": "temperature", "include_primary": True, "weights": None,
                     "members": {"seed1": {"kind": "finetune", "train": {"seed": 1}}, "tfidf": {"kind": "tfidf"}}},
        "compress": {"teacher": "best", "methods": ["int8", "prune", "distill"], "quantize": {"embeddings": True},
                     "prune": {"structure": "ffn_neurons", "sparsity": 0.5, "recover_epochs": 2},
                     "distill": {"layers": None, "temperature": 2.0, "alpha": 0.5, "epochs": 6, "learning_rate": 3e-3, "batch_size": 8},
                     "latency": {"threads": None, "repeats": 3}},
        "explain": {"examples": 6, "seed": 0, "methods": ["integrated_gradients", "gradient_x_input", "attention"], "ig_steps": 32,
                    "attention_layer": -1, "faithfulness_k": 5, "random_draws": 5, "top_tokens": 10},
        "search": {"method": "random", "trials": 2, "metric": "f1_macro", "seed": 0, "concurrency": 1, "study": "tiny",
                   "pruner": {"enabled": True, "startup_trials": 1, "warmup_evaluations": 1},
                   "space": {"train.learning_rate": {"log_uniform": [1e-3, 1e-2]}}},
        "report": {"title": "Tiny report", "worst_errors": 5},
    }
    for section, values in sections.items():
        merge(params[section], values)
    return params


def merge(target: dict, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


def placed(params: dict, root: Path) -> dict:
    """params with its pretrained model inside root/models/pretrained, as the schema requires: a test's model
    (built once per session outside every project) is copied in like a user copies theirs."""
    model = Path(params["train"]["model"])
    if model.is_absolute():
        assert root.resolve() != PROJECT, "a test placed a model in the repository: run it in a scratch project (workdir)"
        target = root / "models/pretrained" / model.name
        if not target.exists():
            shutil.copytree(model, target) if model.is_dir() else (target.parent.mkdir(parents=True, exist_ok=True), shutil.copy(model, target))
        params = {**params, "train": {**params["train"], "model": f"models/pretrained/{model.name}"}}
    return params


def write_project(root: Path, params: dict, rows: pd.DataFrame | None = None) -> Path:
    """A copy of the project's code and DVC files with its own params (model placed in it) and data."""
    for name in PROJECT_FILES:
        source, target = PROJECT / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    if rows is not None:
        rows.to_csv(root / "data/raw/tiny.csv", index=False)
    write_params(root, params)
    return root


def write_params(root: Path, params: dict, header: str = "") -> None:
    (root / "params.yaml").write_text(header + yaml.safe_dump(placed(params, root), sort_keys=False))


def load(params: dict):
    """params validated in the current directory (a scratch project), its model placed there first."""
    from finetune.params import parse_params

    return parse_params(placed(params, Path.cwd()))


def run_stages(*names: str, params) -> None:
    import importlib

    for name in names:
        importlib.import_module(f"stages.{name}").run(params)


def tool_env() -> dict:
    """The environment a user's `make` gives: this interpreter's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    return env


def sh(args: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env={**tool_env(), **(env or {})}, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def make_images(n_per_class: int, size: int = 12, seed: int = 0) -> list[tuple[str, "object"]]:
    """(label, PIL image) pairs: each class a colour, drawn as a square at a random place on noise, so a
    small CNN learns the classes in a few steps and no two images are alike."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_per_class):
        for label, colour in COLOURS.items():
            pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            top, left = rng.integers(0, size // 2, 2)
            pixels[top:top + size // 2, left:left + size // 2] = colour
            images.append((label, Image.fromarray(pixels)))
    return images


def write_image_folder(root: Path, n_per_class: int, size: int = 12, seed: int = 0) -> Path:
    """An ImageFolder: root/<label>/<label>_<i>.png."""
    for i, (label, image) in enumerate(make_images(n_per_class, size, seed)):
        (root / label).mkdir(parents=True, exist_ok=True)
        image.save(root / label / f"{label}_{i:03d}.png")
    return root


def tiny_image_params(model, source: str = "data/raw/images", **sections) -> dict:
    """Params of the image task on tiny generated images and a tiny model (every key spelled out)."""
    params = tiny_params(model, source=source)
    params["task"] = "image-classification"
    params["data"] = {**params["data"], "image_column": "image", "max_image_pixels": 50_000_000, "max_image_side": 1024}
    del params["data"]["text_column"]
    params["preprocess"] = {"image_size": 16, "resize": "crop",
                            "augment": {"random_resized_crop": [0.8, 1.0], "horizontal_flip": True, "rotation": 0.0, "color_jitter": 0.0,
                                        "policy": "none", "mixup": 0.0, "cutmix": 0.0, "seed": 0}}
    params["train"] |= {"epochs": 6, "batch_size": 8, "learning_rate": 3e-3}
    params["ensemble"]["members"] = {"seed1": {"kind": "finetune", "train": {"seed": 1}}, "pixels": {"kind": "pixels", "pixels": {"size": 8, "C": 1.0}}}
    params["search"]["space"] = {"train.learning_rate": {"log_uniform": [1e-3, 1e-2]}}
    params["explain"] |= {"methods": ["integrated_gradients", "occlusion", "grad_cam"], "baseline": "mean", "patch_grid": 4}
    params["report"]["title"] = "Tiny image report"
    for section, values in sections.items():
        merge(params[section], values)
    return params


GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def git_repo(root: Path) -> Path:
    """root as a git repo with everything committed (DVC needs git for params diff and the like)."""
    sh(["git", "init", "-q"], root)
    commit(root, "project")
    return root


def commit(root: Path, message: str) -> None:
    sh([*GIT, "add", "-A"], root)
    sh([*GIT, "commit", "-qm", message, "--allow-empty"], root)


def repro(root: Path, *args: str) -> list[str]:
    """`dvc repro ARGS` like a user; the names of the stages that RAN (not those restored from DVC's run cache)."""
    import re

    done = sh(["dvc", "repro", *args], root)
    return re.findall(r"Running stage '([\w@-]+)'", done.stdout)


def set_param(root: Path, dotted: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_flow(root: Path, concurrency: int = 2, **parameters) -> dict[str, str]:
    """The Prefect pipeline flow on the project at root (a flow run's project is the current directory)."""
    import contextlib

    from flows.pipeline import pipeline

    with contextlib.chdir(root):
        return pipeline(concurrency=concurrency, **parameters)


def copy_repo(source: Path, target: Path) -> Path:
    """A copy of a project repo, its git history and DVC cache (run cache included) too."""
    shutil.copytree(source, target, symlinks=True)
    return target


def e2e_text_params(model) -> dict:
    """The end-to-end tests' text params: the whole DAG, each stage as cheap as its assertions allow (one
    classical member: the tests that need a fine-tuned member add one, and the image run has one)."""
    params = tiny_params(model, compress={"prune": {"recover_epochs": 1}, "distill": {"epochs": 2}, "latency": {"repeats": 3}},
                         explain={"examples": 4, "ig_steps": 16, "random_draws": 3})
    params["ensemble"]["members"] = {"tfidf": {"kind": "tfidf"}}
    return params


def write_lm_corpus(root: Path, documents: int = 6, words: int = 120, seed: int = 0) -> Path:
    """data/raw/corpus/doc<i>.txt: documents of LM_TEXT's words in a seeded order, a line break every 8 words."""
    import numpy as np

    folder = root / "data/raw/corpus"
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary, rng = LM_TEXT.split(), np.random.default_rng(seed)
    for i in range(documents):
        start = rng.integers(len(vocabulary))
        text = [vocabulary[(start + j) % len(vocabulary)] if rng.random() > 0.1 else str(rng.choice(vocabulary)) for j in range(words)]
        (folder / f"doc{i}.txt").write_text("\n".join(" ".join(text[k:k + 8]) for k in range(0, words, 8)) + "\n")
    return folder


def tiny_lm_params(model: Path, source: str = "data/raw/corpus", **sections) -> dict:
    """configs/lm.yaml shrunk for a tiny causal LM: 32-token blocks, a few steps, one member, small generations."""
    params = yaml.safe_load((PROJECT / "configs/lm.yaml").read_text())
    merge(params, {
        "data": {"source": source, "splits": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1, "on_bad_rows": "error"},
        "preprocess": {"block_size": 32, "max_blocks": {"train": None, "val": None, "test": None}},
        "train": {"model": str(model), "epochs": 4, "batch_size": 4, "eval_batch_size": 8, "learning_rate": 3e-3, "eval_steps": None,
                  "logging_steps": 2, "early_stopping": {"patience": 0}, "device": "cpu", "lora": {"rank": 4, "alpha": 8}},
        "evaluate": {"prompts": ["to be or", "the slings and"], "max_new_tokens": 6},
        "ensemble": {"members": {"seed1": {"kind": "finetune", "train": {"seed": 1}}}},
        "compress": {"distill": {"epochs": 2, "learning_rate": 3e-3, "batch_size": 4}, "latency": {"repeats": 3}},
        "explain": {"examples": 2, "methods": ["feature_ablation", "layer_integrated_gradients"], "prompt_tokens": 8, "continuation_tokens": 3, "ig_steps": 4, "random_draws": 2, "faithfulness_k": 2},
        "search": {"trials": 2, "study": "tiny-lm", "space": {"train.learning_rate": {"log_uniform": [1e-3, 1e-2]}}},
    })
    for section, values in sections.items():
        merge(params[section], values)
    return params


def planned(root) -> set[str]:
    """What `dvc repro` would run: the stages `--dry` sees changed, and every stage downstream of them."""
    import re

    import networkx
    from dvc.repo import Repo

    changed = set(re.findall(r"Running stage '([\w@-]+)'", sh(["dvc", "repro", "--dry"], root).stdout))
    with Repo(str(root)) as dvc:
        graph = dvc.index.graph  # edges go from a stage to the stages it depends on
        names = {stage: stage.name for stage in graph.nodes if getattr(stage, "name", None)}
        downstream = {names[d] for stage in graph.nodes if names.get(stage) in changed for d in networkx.ancestors(graph, stage) if d in names}
    return changed | downstream
