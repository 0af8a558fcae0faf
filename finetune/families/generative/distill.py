"""Compressing a causal LM: int8 weights, and a student of half the decoder layers distilled from the teacher.

- int8: finetune/compression/quantize.py (finetune/families/generative/compress.py calls it): every linear layer int8 (Llama's q/k/v/o/gate/up/down
  projections and the LM head; GPT-2's Conv1D layers are turned into nn.Linear first), embedding tables int8
  weight-only when compress.quantize.embeddings, activations quantized per token after SmoothQuant (per tensor, as the
  classifiers do, one outlier token sets a whole block's scale: SmolLM2's perplexity roughly quadrupled). A head tied
  to the embedding table gets its own int8 copy (the lookup and the matmul need different layouts), so the tie is not
  kept. Saved as int8.safetensors + quantization.json, reloaded without pickle.
- distill: finetune/compression/distill.py's student (Llama's model.layers, GPT-2's transformer.h) keeping the layers
  `least_needed_layers` finds (or compress.distill.layers), trained here on token blocks with, per predicted token
  (per reply token when the blocks carry labels, as a chat model's do: the loss the model was fine-tuned with),
      alpha * CE(student, next token) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)).
  The teacher's logits are computed per batch (teacher in eval, no grad), never stored: a vocabulary of 49k
  floats per token would be ~200 kB a token on disk.
Limits: a plain torch loop on one device (AdamW, weight decay 0.01, 10 % linear warm-up then linear decay,
like finetune/compression/distill.py's Trainer run), no gradient accumulation or mixed precision; blocks are packed
(no padding: every position is a real token).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from finetune.compression.distill import kd_loss
from finetune.config.sections import Distill
from finetune.models import anatomy


def check_blocks(blocks: np.ndarray, model: nn.Module) -> None:
    """Blocks must be a 2-D integer array of token ids the model knows, at least 2 tokens wide (else nothing is predicted)."""
    vocabulary = model.config.vocab_size
    if blocks.ndim != 2 or blocks.shape[1] < 2 or not np.issubdtype(blocks.dtype, np.integer) or len(blocks) == 0:
        raise ValueError(f"token blocks must be a non-empty 2-D integer array at least 2 tokens wide, got {blocks.dtype} {blocks.shape}")
    if blocks.min() < 0 or blocks.max() >= vocabulary:
        raise ValueError(f"token ids must be in [0, {vocabulary - 1}] (the model's vocabulary), got [{blocks.min()}, {blocks.max()}]")


def least_needed_layers(model: nn.Module, blocks: np.ndarray, keep: int, per_round: int = 3) -> list[int]:
    """The `keep` decoder layers a student keeps: round after round, the `per_round` layers whose removal alone raises the
    loss on the calibration blocks least are dropped. Why not every other layer, as for the classifiers: on SmolLM2-135M
    (30 layers, Shakespeare, bench/lm_students.py) every other layer loses layer 0 and scored test perplexity 4.1 million
    before training and 846 after 32 distillation steps (teacher 42.3); one layer a round on 8 blocks chose a student at
    328 before and 86 after, while one-pass proxies did worse (block influence 644, the best contiguous run 4,236).
    Three a round on 4 blocks (120 forward passes instead of 345: 107 s on 2 CPU cores, not 730) kept 14 of the same 15
    layers and scored 369 before training."""
    parent, attribute, layers = anatomy.block_list(model)
    ids = torch.as_tensor(blocks, dtype=torch.long, device=next(model.parameters()).device)

    def loss_without(layer: int) -> float:
        setattr(parent, attribute, type(layers)(*(layers[i] for i in kept if i != layer)) if isinstance(layers, nn.Sequential)
                else nn.ModuleList(layers[i] for i in kept if i != layer))
        try:
            with torch.inference_mode():
                return model(input_ids=ids, labels=ids, use_cache=False).loss.item()
        finally:
            setattr(parent, attribute, layers)

    model.eval()
    kept = list(range(len(layers)))
    while len(kept) > keep:
        cost = {layer: loss_without(layer) for layer in kept}
        for layer in sorted(cost, key=cost.get)[:min(per_round, len(kept) - keep)]:
            kept.remove(layer)
    return kept


def _batches(blocks: np.ndarray, scored: np.ndarray | None, batch_size: int, device: str):
    """(token ids, which next-token positions count or None) per batch."""
    for start in range(0, len(blocks), batch_size):
        yield (torch.as_tensor(blocks[start:start + batch_size], dtype=torch.long, device=device),
               None if scored is None else torch.as_tensor(scored[start:start + batch_size], device=device))


def _next_token_loss(student: nn.Module, teacher: nn.Module, ids: torch.Tensor, temperature: float, alpha: float,
                     scored: torch.Tensor | None = None) -> torch.Tensor:
    """kd_loss over the batch's predicted tokens (the logits at position t predict token t + 1): every one, or those
    `scored` marks (a chat model learns its replies only, so it is distilled on them only)."""
    with torch.no_grad():
        teacher_logits = teacher(input_ids=ids).logits[:, :-1].flatten(0, 1)
    logits, targets = student(input_ids=ids).logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()
    if scored is not None:
        keep = scored.flatten()
        if not keep.any():
            return logits.sum() * 0
        logits, teacher_logits, targets = logits[keep], teacher_logits[keep], targets[keep]
    return kd_loss(logits.float(), teacher_logits.float(), targets, temperature, alpha)


def kl_to_teacher(teacher: nn.Module, student: nn.Module, blocks: np.ndarray, batch_size: int, device: str = "cpu",
                  scored: np.ndarray | None = None) -> float:
    """Mean KL(teacher || student) per predicted (scored) token at temperature 1, nats: how far the student's next-token
    distributions are from the teacher's (0 = the same model)."""
    check_blocks(blocks, teacher)
    teacher.eval().to(device), student.eval().to(device)
    total = 0.0
    with torch.no_grad():
        for ids, mask in _batches(blocks, scored, batch_size, device):
            tokens = len(ids) if mask is None else int(mask.sum())
            total += _next_token_loss(student, teacher, ids, 1.0, 0.0, mask).item() * tokens
    # unmasked, every block predicts the same number of tokens: the mean of batch means is the token mean
    return total / (len(blocks) if scored is None else max(int(scored.sum()), 1))


def distill(teacher: nn.Module, student: nn.Module, blocks: np.ndarray, config: Distill, seed: int, device: str = "cpu",
            scored: np.ndarray | None = None) -> dict:
    """Train student in place on the teacher's next-token distributions over blocks (blocks x block_size token ids)
    for config.epochs (a fraction is a share of the batches); `scored` (blocks x block_size - 1): the positions that
    count, None = all. Returns facts for the report."""
    check_blocks(blocks, teacher)
    torch.manual_seed(seed)
    order = np.random.default_rng(seed)
    teacher.eval().to(device)
    student.train().to(device)
    per_epoch = math.ceil(len(blocks) / config.batch_size)
    steps = max(1, round(config.epochs * per_epoch))
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * steps), steps)
    losses = []
    for step in range(steps):
        if step % per_epoch == 0:
            shuffled = order.permutation(len(blocks))
            batches = list(_batches(blocks[shuffled], None if scored is None else scored[shuffled], config.batch_size, device))
        ids, mask = batches[step % per_epoch]
        loss = _next_token_loss(student, teacher, ids, config.temperature, config.alpha, mask)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    student.eval()
    return {"steps": steps, "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4)}
