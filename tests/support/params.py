"""params.yaml contents for tiny runs of each task (every key a test reads spelled out), placed and loaded as a user's."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.support.repos import PROJECT


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


def write_params(root: Path, params: dict, header: str = "") -> None:
    (root / "params.yaml").write_text(header + yaml.safe_dump(placed(params, root), sort_keys=False))


def render_params(root: Path) -> None:
    """root's params.yaml rewritten as tools/use_config.py writes it: every key spelled out and commented."""
    import contextlib

    from finetune.config.files import render
    from finetune.config.params import load_params

    with contextlib.chdir(root):
        (root / "params.yaml").write_text(render(load_params("params.yaml")))


def load(params: dict):
    """params validated in the current directory (a scratch project), its model placed there first."""
    from finetune.config.params import parse_params

    return parse_params(placed(params, Path.cwd()))


def run_stages(*names: str, params) -> None:
    import importlib

    for name in names:
        importlib.import_module(f"stages.{name}").run(params)


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
    params["explain"] = {key: value for key, value in params["explain"].items() if key not in ("attention_layer", "top_tokens")}  # text's keys
    params["explain"] |= {"methods": ["integrated_gradients", "occlusion", "grad_cam"], "baseline": "mean", "patch_grid": 4}
    params["report"]["title"] = "Tiny image report"
    for section, values in sections.items():
        merge(params[section], values)
    return params


def tiny_audio_params(model, source: str = "data/raw/tones", **sections) -> dict:
    """Params of the audio task on generated tones and a tiny Whisper (every key spelled out)."""
    params = tiny_params(model, source=source)
    params["task"] = "audio-classification"
    params["data"] = {**params["data"], "audio_column": "audio", "max_seconds": 30.0, "min_sample_rate": 8000, "max_clipped": 0.01}
    del params["data"]["text_column"]
    # augmentation off: a tiny Whisper from random weights learns the tones in 16 epochs on 4 of 4 seeds without it
    # (the augmentation has its own tests)
    params["preprocess"] = {"window_seconds": 1, "augment": {"shift": False, "gain_db": 6.0, "noise": 0.0, "noise_snr_db": [10.0, 40.0],
                                                             "time_masks": 0, "time_mask_frames": 10, "frequency_masks": 0,
                                                             "frequency_mask_bands": 8, "seed": 0}}
    params["train"] |= {"epochs": 16, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.1}
    params["ensemble"]["members"] = {"mfcc": {"kind": "mfcc", "mfcc": {"coefficients": 20, "C": 1.0}}}
    params["explain"] = {key: value for key, value in params["explain"].items() if key not in ("attention_layer", "top_tokens")}
    params["explain"] |= {"methods": ["integrated_gradients", "occlusion"], "band_groups": 4, "time_slices": 4}
    params["report"]["title"] = "Tiny audio report"
    for section, values in sections.items():
        merge(params[section], values)
    return params


def tiny_speech_params(model, source: str = "data/raw/tones.csv", **sections) -> dict:
    """Params of the speech recognition task on a table of tones with transcripts and a tiny Whisper (every key spelled out)."""
    params = tiny_params(model, source=source)
    params["task"] = "speech-recognition"
    params["data"] = {**params["data"], "audio_column": "audio", "label_column": "transcript", "max_seconds": 30.0, "min_sample_rate": 8000,
                      "max_clipped": 0.01}
    del params["data"]["text_column"]
    params["preprocess"] = {"window_seconds": 1, "augment": None, "rehearsal": 0}  # no espeak-ng English in a tones test
    # full: the tiny Whisper starts from random weights, its encoder must learn the pitches (the task default trains the decoder alone)
    params["train"] |= {"strategy": "full", "epochs": 30, "batch_size": 8, "learning_rate": 1e-2, "warmup_ratio": 0.1,
                        "early_stopping": {"metric": "loss", "patience": 0}}
    params["evaluate"] = {"beams": 2, "max_new_tokens": 16, "batch_size": 8, "real_speech": "data/raw/real.csv"}
    params["ensemble"] = {"method": "auto", "members": {"seed1": {"kind": "finetune", "train": {"seed": 1}}}}
    params["compress"]["methods"] = ["int8", "prune"]
    params["explain"] = {}
    params["search"]["metric"] = "loss"
    params["report"]["title"] = "Tiny speech report"
    for section, values in sections.items():
        merge(params[section], values)
    return params


def e2e_text_params(model) -> dict:
    """The end-to-end tests' text params: the whole DAG, each stage as cheap as its assertions allow (one
    classical member: the tests that need a fine-tuned member add one, and the image run has one)."""
    params = tiny_params(model, compress={"prune": {"recover_epochs": 1}, "distill": {"epochs": 2}, "latency": {"repeats": 3}},
                         explain={"examples": 4, "ig_steps": 16, "random_draws": 3})
    params["ensemble"]["members"] = {"tfidf": {"kind": "tfidf"}}
    return params


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


def tiny_chat_params(model: Path, source: str = "data/raw/chats.jsonl", **sections) -> dict:
    """configs/chat.yaml shrunk for a tiny chat model: 64-token blocks, a few steps, one member, short replies."""
    params = yaml.safe_load((PROJECT / "configs/chat.yaml").read_text())
    merge(params, {
        "data": {"source": source, "splits": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1, "on_bad_rows": "skip"},
        "preprocess": {"block_size": 64},
        "train": {"model": str(model), "epochs": 3, "batch_size": 4, "eval_batch_size": 8, "learning_rate": 3e-3, "eval_steps": None,
                  "logging_steps": 2, "early_stopping": {"patience": 0}, "device": "cpu", "lora": {"rank": 4, "alpha": 8}},
        "evaluate": {"auto_prompts": 2, "max_new_tokens": 6},
    })
    for section, values in sections.items():
        merge(params[section], values)
    return params


def image_text_params(image_model, text_model, **sections) -> dict:
    params = tiny_params(text_model, source="data/raw/vqa/pairs.csv")
    params["task"] = "image-text-classification"
    params["data"] = {**params["data"], "image_column": "image", "text_column": "text"}
    params["preprocess"] = {"image_size": 16, "max_length": 16}
    params["train"] |= {"model": f"{image_model} + {text_model}", "epochs": 4, "batch_size": 8, "learning_rate": 3e-3,
                        "encoders": {"image": {"strategy": "full"}, "text": {"strategy": "full"}}}
    params["ensemble"]["members"] = {"text_only": {"kind": "finetune", "train": {"modalities": ["text"]}}}
    params["compress"]["methods"] = ["int8"]
    params["explain"] = {"examples": 6, "seed": 0}  # no explainer yet: the family's keys only
    for section, values in sections.items():
        merge(params.setdefault(section, {}), values)
    return params


def place(params: dict, root) -> dict:
    """Both encoders copied into root/models/pretrained, as a user places theirs."""
    image, text = params["train"]["model"].split(" + ")
    names = [placed({"train": {"model": model}}, root)["train"]["model"] for model in (image, text)]
    return {**params, "train": {**params["train"], "model": " + ".join(names)}}
