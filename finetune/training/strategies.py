"""What a run trains and at which learning rates: `train.strategy` and its regularisers, for any model
whose layers finetune/models/anatomy.py can find (transformers, CNNs, ViTs).

- full: every weight. partial: the input group (embeddings / stem) and the first `freeze_layers` blocks frozen.
- linear_probe: everything but the head (what follows the last block: pooler, classifier...) frozen.
- gradual_unfreeze: the head first, then one more layer group from the top every `unfreeze_every`
  epochs (ULMFiT; Lightning's BaseFinetuning as one callback), the input group last.
- adaptive: the groups that train change with how training goes (adaptive.py): unfreeze_on_plateau opens the next
  group down when the val metric stalls; freeze_converged freezes groups bottom-up once their gradients settle.
- lora: peft LoRA adapters on `lora.target_modules`, the head fully; the saved model is merged.
A model made of pretrained parts (finetune/tasks/image-text-classification/fusion.py: an image and a text encoder) names a strategy per part in
`part_strategies` (frozen | full | partial | lora); its fusion layers and head always train.
`layer_lr_decay` d gives the head the base rate, block i base * d^(depth - i), the input group
base * d^(depth + 1). `l1` adds l1 * sum|w| over the trained weight matrices (not biases or norms)
to the training loss, never to the validation loss.
BatchNorm: the layers of frozen groups stay in eval mode even when the Trainer calls model.train(), so
their running statistics never move; trained groups update theirs unless train.batchnorm is `freeze`.
A trained BatchNorm layer that sees batches smaller than 8 is counted and warned about.
"""
from __future__ import annotations

import math
import types
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from transformers import Trainer, TrainerCallback

from finetune.config.sections import Train
from finetune.errors import UserError
from finetune.models import anatomy
from finetune.training import losses
from finetune.training.head_loss import UNCERTAINTY_LR

ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)  # layer types peft's LoRA can wrap
SMALL_BATCH = 8


def layer_groups(model: nn.Module, train: Train | None = None) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Bottom-up: input group, layer.0 .. layer.<depth-1>, head. A model whose layers cannot be found
    (e.g. ALBERT shares one layer) is one group "all", which is enough for full and lora at one rate."""
    if hasattr(model, "part_strategies"):  # pretrained parts (finetune/tasks/image-text-classification/fusion.py): a group each, then the rest (fusion, head)
        parts = {name: list(model.get_submodule(name).named_parameters(prefix=name)) for name in model.part_strategies}
        taken = {name for pairs in parts.values() for name, _ in pairs}
        return {**parts, "head": [(name, p) for name, p in model.named_parameters() if name not in taken]}
    groups = anatomy.layer_groups(model)
    if groups is not None:
        return groups
    if train is None or (train.strategy in ("full", "lora") and train.layer_lr_decay == 1):
        return {"all": list(model.named_parameters())}
    raise UserError(f"cannot find the layers of {type(model).__name__}: train.strategy {train.strategy!r} and train.layer_lr_decay "
                    "need them; use strategy full or lora with layer_lr_decay 1 (or add its family to finetune/models/anatomy.py)")


def _keep_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def lock_batchnorm(module: _BatchNorm, locked: bool) -> None:
    """A locked BatchNorm stays in eval mode (running statistics fixed) whatever model.train() says."""
    if locked:
        module.train = types.MethodType(_keep_eval, module)
        module.eval()
    elif "train" in vars(module):
        del module.train


def set_trainable(model: nn.Module, groups: dict, names, trainable: bool, batchnorm: str) -> None:
    """The named layer groups' weights trainable or frozen; their BatchNorm statistics locked unless they train and
    train.batchnorm (`batchnorm`) is train."""
    for name in names:
        for _, parameter in groups[name]:
            parameter.requires_grad_(trainable)
    norms = anatomy.batchnorm_groups(model)
    for name in names:
        for module in norms.get(name, []):
            lock_batchnorm(module, not trainable or batchnorm == "freeze")


def adaptable_layers(model: nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, ADAPTABLE) and name})


def check_against_model(train: Train, model: nn.Module) -> None:
    """The strategy's settings that depend on the model: a clear error before any training."""
    found = anatomy.blocks(model)
    if train.strategy == "partial" and found is not None and train.freeze_layers > len(found):
        raise UserError(f"train.freeze_layers is {train.freeze_layers} but {train.model} has only {len(found)} layers")
    if train.strategy == "lora" and train.lora.target_modules:
        valid = adaptable_layers(model)
        missing = [name for name in train.lora.target_modules if name not in valid]
        if missing:
            raise UserError(f"train.lora.target_modules {missing} are not modules of {train.model}; the layers LoRA can adapt there (linear, conv, embedding) are {valid}")


def apply_strategy(model: nn.Module, train: Train) -> nn.Module:
    """Freeze what the strategy freezes (or wrap the model with LoRA adapters); returns the model to train."""
    if hasattr(model, "part_strategies"):
        return _per_part(model, train)
    check_against_model(train, model)
    if train.strategy == "lora":
        return _with_lora(model, train)
    groups = layer_groups(model, train)
    body = [name for name in groups if name != "head"]
    frozen = {"full": [], "partial": body[: train.freeze_layers + 1], "linear_probe": body, "gradual_unfreeze": body,
              "adaptive": body if train.adaptive.policy == "unfreeze_on_plateau" else []}[train.strategy]
    set_trainable(model, groups, frozen, False, train.batchnorm)
    set_trainable(model, groups, [name for name in groups if name not in frozen], True, train.batchnorm)
    return model


def _per_part(model: nn.Module, train: Train) -> nn.Module:
    """A model made of pretrained parts (an image + text model's encoders, finetune/tasks/image-text-classification/fusion.py), each with its own strategy
    in `model.part_strategies` ({submodule: strategy}, `frozen` = no weight trains); everything else (fusion, head) trains."""
    model.requires_grad_(True)
    for name, strategy in model.part_strategies.items():
        part = model.get_submodule(name)
        if strategy == "frozen":
            part.requires_grad_(False)
            for module in part.modules():
                if isinstance(module, _BatchNorm):
                    lock_batchnorm(module, True)
        else:
            model.set_submodule(name, apply_strategy(part, train.model_copy(update={"strategy": strategy})))
    return model


def _with_lora(model: nn.Module, train: Train) -> nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model

    lora = train.lora
    # the whole head trains fully, as in linear_probe: the new classifier and the pooler (peft's
    # SEQ_CLS default keeps only the classifier, leaving a pretrained pooler frozen in front of it)
    # A causal LM's head is its next-token matrix, usually the token embeddings themselves (tied): training it fully would
    # train a quarter of SmolLM2; adapters only, as peft's CAUSAL_LM default does
    causal = type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))
    head = anatomy.head_modules(model) if anatomy.blocks(model) is not None and not causal else []
    sequence = "ForSequenceClassification" in type(model).__name__
    task_type = TaskType.SEQ_CLS if sequence else TaskType.CAUSAL_LM if causal else None
    config = LoraConfig(task_type=task_type, r=lora.rank, lora_alpha=lora.alpha,
                        lora_dropout=lora.dropout, target_modules=lora.target_modules, modules_to_save=head or None)
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as error:  # e.g. no default target modules for this architecture
        raise UserError(f"train.strategy lora on {type(model).__name__}: {error}. Set train.lora.target_modules to some of its "
                        f"layers peft can adapt: {adaptable_layers(model)}") from None
    for module in wrapped.modules():  # BatchNorm outside the head is frozen (like its weights): keep its statistics
        if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters()):
            lock_batchnorm(module, True)
    return wrapped


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

    def __init__(self, model: nn.Module, train: Train):
        self.model, self.train, self.groups = model, train, layer_groups(model)
        self.top_down = [name for name in reversed(self.groups) if name != "head"]
        self.unfrozen = 0

    def on_step_begin(self, args, state, control, **kwargs):
        wanted = min(len(self.top_down), math.floor((state.epoch or 0) / self.train.unfreeze_every + 1e-9))
        if wanted != self.unfrozen:
            set_trainable(self.model, self.groups, self.top_down[:wanted], True, self.train.batchnorm)
            set_trainable(self.model, self.groups, self.top_down[wanted:], False, self.train.batchnorm)
            print(f"epoch {state.epoch:.2f}: trainable groups = head + {self.top_down[:wanted]}")
            self.unfrozen = wanted


def batchnorms(model) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def has_batchnorm(model) -> bool:
    """Whether training drops each epoch's last incomplete batch (StrategyTrainer.get_train_dataloader)."""
    return bool(batchnorms(model))


class StrategyTrainer(Trainer):
    """Trainer with per-layer-group learning rates, AdamW or SGD, the L1 penalty, batch-level
    augmentation (soft labels from MixUp/CutMix get a soft cross-entropy) and BatchNorm bookkeeping.

    Every parameter is in the optimizer (frozen ones get no gradient, so AdamW and SGD skip them and
    they stay bit-identical); that is what lets gradual unfreezing switch groups on mid-run."""

    def __init__(self, *args, train_params: Train, fused_optimizer: bool = False, batch_augmenter=None, head_loss=None, class_weights=None,
                 target: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # every loss here is a mean over its batch (a model's own, the heads', the weighted and focal ones), so the Trainer must
        # divide it by the accumulation steps. Left to itself it trusts a model whose forward takes **kwargs (BERT's does) to
        # normalise by num_items_in_batch, which BERT ignores: with accumulation each micro-batch counted as a whole batch and
        # the gradients came out that many times too large, which gradient clipping then treated differently
        # (tests/training/test_memory.py trains the same model in 1 or 2 micro-batches per batch)
        self.model_accepts_loss_kwargs = False
        self.train_params, self.batch_augmenter = train_params, batch_augmenter
        self.head_loss = head_loss  # several heads (head_loss.py): their combined loss, maybe with learned weights
        self.class_weights = class_weights  # one per class, or None (losses.py)
        self.target = target  # a numeric label's mean and standard deviation (finetune/data/numbers.py), or None
        self.fused = {"fused": True} if fused_optimizer else {}  # CUDA only (finetune.training.speed_settings)
        self.small_batches = 0
        self.norms = batchnorms(self.model)
        for module in self.norms:
            module.register_forward_pre_hook(self._count_small_batch)

    def _count_small_batch(self, module, inputs) -> None:
        if module.training and inputs[0].shape[0] < SMALL_BATCH:
            if not self.small_batches:
                print(f"warning: a trained BatchNorm layer saw a batch of {inputs[0].shape[0]} (< {SMALL_BATCH}): its statistics are "
                      "noisy; use a larger train.batch_size or train.batchnorm: freeze")
            self.small_batches += 1

    def get_train_dataloader(self):
        """Models with BatchNorm drop the last incomplete TRAINING batch (a batch of 1 or 2 rows gives meaningless
        batch statistics, and BatchNorm refuses a single value per channel); evaluation keeps every row."""
        if not self.norms or self.args.dataloader_drop_last:
            return super().get_train_dataloader()
        self.args.dataloader_drop_last = True
        try:
            return super().get_train_dataloader()
        finally:
            self.args.dataloader_drop_last = False

    def batchnorm_report(self) -> dict:
        """For reports/train.json when the model has BatchNorm layers."""
        if not self.norms:
            return {}
        locked = sum(1 for m in self.norms if "train" in vars(m))
        return {"batchnorm": {"layers": len(self.norms), "frozen_statistics": locked, "small_batch_forwards": self.small_batches}}

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            train, model = self.train_params, self.model
            decay = set(self.get_decay_parameter_names(model))
            groups = layer_groups(model, train)
            rates = learning_rates(groups, train)
            # one learning rate: one group (per-group AdamW steps cost ~5 % on a CNN); adaptive re-warms a group's own rate
            if len(set(rates.values())) == 1 and train.strategy != "adaptive":
                groups, rates = {"all": [pair for pairs in groups.values() for pair in pairs]}, {"all": train.learning_rate}
            param_groups = [
                {"params": chosen, "lr": rates[name], "weight_decay": train.weight_decay if with_decay else 0.0, "group": name}
                for name, params in groups.items() for with_decay in (True, False)
                if (chosen := [p for n, p in params if (n in decay) == with_decay])
            ]
            if self.head_loss is not None and self.head_loss.uncertainty:
                param_groups.append({"params": [self.head_loss.log_variance], "lr": UNCERTAINTY_LR, "weight_decay": 0.0, "group": "head_weights"})
            if train.optimizer == "sgd":
                self.optimizer = torch.optim.SGD(param_groups, lr=train.learning_rate, momentum=train.momentum, **self.fused)
            else:
                self.optimizer = torch.optim.AdamW(param_groups, lr=train.learning_rate,
                                                   betas=(self.args.adam_beta1, self.args.adam_beta2), eps=self.args.adam_epsilon,
                                                   **self.fused)
        return self.optimizer

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.head_loss is not None and self.args.should_save:
            self.head_loss.save(Path(output_dir))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.head_loss is not None and self.head_loss.uncertainty:
            self.head_loss.load(Path(checkpoint))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        train = self.train_params
        if self.batch_augmenter is not None and model.training:
            inputs = self.batch_augmenter(inputs)
        if self.head_loss is not None:  # several heads: their masked losses, combined
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = self.head_loss(outputs.logits, labels)
            result = (loss, outputs) if return_outputs else loss
        elif self.target is not None:  # a numeric label: its regression loss on the standardised label
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = losses.regression_loss(outputs.logits, labels, train.loss, self.target, train.huber_delta)
            result = (loss, outputs) if return_outputs else loss
        elif (train.loss != "cross_entropy" or self.class_weights is not None or inputs["labels"].is_floating_point()
              or (train.label_smoothing and self.label_smoother is None)):
            # a weighted or focal loss, class probabilities (MixUp/CutMix), or label smoothing the Trainer does not do (a CNN)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = losses.loss(outputs.logits, labels, train.loss, self.class_weights, train.focal_gamma, train.label_smoothing)
            result = (loss, outputs) if return_outputs else loss
        else:
            result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if not (train.l1 and model.training):
            return result
        penalty = train.l1 * sum(p.abs().sum() for p in model.parameters() if p.requires_grad and p.dim() > 1)
        return (result[0] + penalty, result[1]) if return_outputs else result + penalty
