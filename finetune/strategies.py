"""What a run trains and at which learning rates: `train.strategy` and its regularisers.

- full: every weight. partial: the embeddings and the first `freeze_layers` encoder layers frozen.
- linear_probe: the whole encoder frozen, only the head (pooler + classifier) trains.
- gradual_unfreeze: the head first, then one more layer group from the top every `unfreeze_every`
  epochs (ULMFiT; Lightning's BaseFinetuning as one callback), the embeddings last.
- lora: peft LoRA adapters on `lora.target_modules`, the head (pooler + classifier) fully; the saved model is merged.
Layer groups are found the same way for any Hugging Face encoder: `layer.i` = the i-th block of the
ModuleList that is config.num_hidden_layers long; `embeddings` = the parameters registered before the
first block; `head` = those after the last (pooler, classifier).
`layer_lr_decay` d gives the head the base rate, layer.i base * d^(depth - i), the embeddings
base * d^(depth + 1). `l1` adds l1 * sum|w| over the trained weight matrices (not biases or norms)
to the training loss, never to the validation loss.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from finetune.errors import UserError
from finetune.params import Train


def layer_groups(model: nn.Module, train: Train | None = None) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Bottom-up: embeddings, layer.0 .. layer.<depth-1>, head. A model whose layers cannot be found
    (e.g. ALBERT shares one layer) is one group "all", which is enough for full and lora at one rate."""
    depth = model.config.num_hidden_layers
    blocks = next((m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == depth), None)
    if blocks is None:
        if train is not None and train.strategy in ("full", "lora") and train.layer_lr_decay == 1:
            return {"all": list(model.named_parameters())}
        raise UserError(f"cannot find the {depth} encoder layers of {type(model).__name__}: train.strategy {train.strategy if train else ''!r} "
                        "and train.layer_lr_decay need them; use strategy full or lora with layer_lr_decay 1")
    owner = {id(p): f"layer.{i}" for i, block in enumerate(blocks) for p in block.parameters()}
    groups = {"embeddings": [], **{f"layer.{i}": [] for i in range(depth)}, "head": []}
    after_blocks = False
    for name, parameter in model.named_parameters():
        group = owner.get(id(parameter))
        after_blocks = after_blocks or group is not None
        groups[group or ("head" if after_blocks else "embeddings")].append((name, parameter))
    return groups


def _set_trainable(groups: dict, names, trainable: bool) -> None:
    for name in names:
        for _, parameter in groups[name]:
            parameter.requires_grad_(trainable)


def check_against_model(train: Train, model: nn.Module) -> None:
    """The strategy's settings that depend on the model: a clear error before any training."""
    depth = model.config.num_hidden_layers
    if train.strategy == "partial" and train.freeze_layers > depth:
        raise UserError(f"train.freeze_layers is {train.freeze_layers} but {train.model} has only {depth} layers")
    if train.strategy == "lora" and train.lora.target_modules:
        linears = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
        missing = [name for name in train.lora.target_modules if name not in linears]
        if missing:
            raise UserError(f"train.lora.target_modules {missing} are not modules of {train.model}; its linear layers are {linears}")


def apply_strategy(model: nn.Module, train: Train) -> nn.Module:
    """Freeze what the strategy freezes (or wrap the model with LoRA adapters); returns the model to train."""
    check_against_model(train, model)
    if train.strategy == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        lora = train.lora
        # the whole head trains fully, as in linear_probe: the new classifier and the pooler (peft's
        # SEQ_CLS default keeps only the classifier, leaving a pretrained pooler frozen in front of it)
        head = sorted({name.rsplit(".", 1)[0] for name, _ in layer_groups(model, train).get("head", [])})
        config = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=lora.target_modules, modules_to_save=head or None)
        return get_peft_model(model, config)
    groups = layer_groups(model, train)
    body = [name for name in groups if name != "head"]
    frozen = {"full": [], "partial": body[: train.freeze_layers + 1], "linear_probe": body, "gradual_unfreeze": body}
    _set_trainable(groups, frozen[train.strategy], False)
    return model


def learning_rates(groups: dict, train: Train) -> dict[str, float]:
    if list(groups) == ["all"]:
        return {"all": train.learning_rate}
    depth = len(groups) - 2
    return {name: train.learning_rate * train.layer_lr_decay ** (depth + 1 - i) for i, name in enumerate(groups)}


def describe(model: nn.Module, train: Train) -> dict:
    """Trainable vs total parameters and each layer group's learning rate, for the log and the report."""
    groups = layer_groups(model, train)
    rates = learning_rates(groups, train)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "strategy": train.strategy,
        "parameters": total,
        "trainable": trainable,
        "trainable_share": round(trainable / total, 6),
        "optimizer": train.optimizer,
        "groups": [{"group": name, "learning_rate": rates[name], "parameters": sum(p.numel() for _, p in params),
                    "trainable": sum(p.numel() for _, p in params if p.requires_grad)} for name, params in groups.items()],
    }


class GradualUnfreeze(TrainerCallback):
    """Before each step: layer groups from the top are trainable, one more per `every` epochs."""

    def __init__(self, model: nn.Module, every: float):
        groups = layer_groups(model)
        self.groups, self.every = groups, every
        self.top_down = [name for name in reversed(groups) if name != "head"]
        self.unfrozen = 0

    def on_step_begin(self, args, state, control, **kwargs):
        wanted = min(len(self.top_down), math.floor((state.epoch or 0) / self.every + 1e-9))
        if wanted != self.unfrozen:
            _set_trainable(self.groups, self.top_down[:wanted], True)
            _set_trainable(self.groups, self.top_down[wanted:], False)
            print(f"epoch {state.epoch:.2f}: trainable groups = head + {self.top_down[:wanted]}")
            self.unfrozen = wanted


class StrategyTrainer(Trainer):
    """Trainer with per-layer-group learning rates, AdamW or SGD, and the L1 penalty.

    Every parameter is in the optimizer (frozen ones get no gradient, so AdamW and SGD skip them and
    they stay bit-identical); that is what lets gradual unfreezing switch groups on mid-run."""

    def __init__(self, *args, train_params: Train, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_params = train_params

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            train, model = self.train_params, self.model
            decay = set(self.get_decay_parameter_names(model))
            groups = layer_groups(model, train)
            rates = learning_rates(groups, train)
            param_groups = [
                {"params": chosen, "lr": rates[name], "weight_decay": train.weight_decay if with_decay else 0.0, "group": name}
                for name, params in groups.items() for with_decay in (True, False)
                if (chosen := [p for n, p in params if (n in decay) == with_decay])
            ]
            if train.optimizer == "sgd":
                self.optimizer = torch.optim.SGD(param_groups, lr=train.learning_rate, momentum=train.momentum)
            else:
                self.optimizer = torch.optim.AdamW(param_groups, lr=train.learning_rate,
                                                   betas=(self.args.adam_beta1, self.args.adam_beta2), eps=self.args.adam_epsilon)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if not (self.train_params.l1 and model.training):
            return result
        penalty = self.train_params.l1 * sum(p.abs().sum() for p in model.parameters() if p.requires_grad and p.dim() > 1)
        return (result[0] + penalty, result[1]) if return_outputs else result + penalty
