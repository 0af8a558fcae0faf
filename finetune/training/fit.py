"""Fine-tuning with the transformers Trainer: the train stage, every finetune ensemble member and every
search trial run `fit`, whatever the task (the task supplies the model, datasets and collator).

Features: a strategy (full, partial, linear_probe, gradual_unfreeze, adaptive, lora: strategies.py, adaptive.py),
AdamW with weight decay (L2) or SGD with momentum, layer-wise learning-rate decay, L1, label
smoothing, batch-level augmentation where the task has one (MixUp/CutMix), warmup + constant/linear/
cosine schedule, dropout override, evaluation on val every `eval_steps` (or epoch), early stopping on a
val metric with patience, best checkpoint restored, per-step metrics logged with dvclive (dvclive is
never allowed to touch dvc.yaml), device auto|cpu|cuda (auto = CUDA, in bf16 where supported) with
`train.speed` (TF32, fused optimizer, pinned memory on CUDA only; loader workers, torch.compile anywhere),
data-parallel training in `train.processes` torchrun processes (distributed.py; only rank 0 writes).
Resume: checkpoints go to .cache/checkpoints/<fingerprint>, where the fingerprint hashes the run's
name, the params, the prepared data and the code; a killed run restarted with the SAME fingerprint
resumes from its last complete checkpoint (and says so); anything else starts fresh.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from dvclive import Live
from transformers import EarlyStoppingCallback, PrinterCallback, TrainerCallback, TrainingArguments, set_seed
from transformers.utils import is_torch_tf32_available

from finetune import paths
from finetune.config.params import Params
from finetune.config.sections import LOWER_IS_BETTER, NUMBER_METRICS, Speed
from finetune.data import numbers
from finetune.data.heads import Heads, head_metrics
from finetune.errors import UserError
from finetune.io import atomic_path, write_json
from finetune.scoring import metrics
from finetune.scoring import numbers as number_scores
from finetune.training import distributed, losses, memory
from finetune.training.adaptive import AdaptiveLayers
from finetune.training.head_loss import HeadLoss
from finetune.training.schedule import plan
from finetune.training.strategies import GradualUnfreeze, StrategyTrainer, apply_strategy, describe, has_batchnorm


def resolve_device(choice: str) -> tuple[str, bool]:
    """(device, use bf16). auto = CUDA when present, bf16 where the GPU supports it."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    if choice == "cpu" or not torch.cuda.is_available():
        return "cpu", False
    # in hardware only (Ampere or newer): torch's default also counts emulated bf16, far slower than fp32 on a V100 or T4
    return "cuda", torch.cuda.is_bf16_supported(including_emulation=False)


def speed_settings(speed: Speed, device: str) -> dict:
    """What train.speed turns on for this device. The CUDA-only settings stay off elsewhere, so a CPU run is
    exactly what it was without them; tf32 also needs a GPU that has it (TrainingArguments refuses it otherwise)."""
    cuda = device == "cuda"
    return {"tf32": cuda and speed.tf32 and is_torch_tf32_available(), "fused_optimizer": cuda and speed.fused_optimizer,
            "pin_memory": cuda and speed.pin_memory, "dataloader_workers": speed.dataloader_workers, "compile": speed.compile}


def fingerprint(params: Params, run_name: str) -> str:
    """Same fingerprint = same run: its name, params that shape training, prepared data, the code (all of finetune/)."""
    digest = hashlib.sha256(run_name.encode())
    digest.update(json.dumps(params.model_dump(include={"task", "train", "preprocess"}), sort_keys=True).encode())
    code = sorted(Path(paths.__file__).parent.rglob("*.py"))
    for path in [*sorted(paths.PREPARED.iterdir()), *code]:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose trainer_state.json (written last by Trainer) is whole."""
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]), reverse=True)
    for checkpoint in checkpoints:
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
            return checkpoint
        except (OSError, ValueError):
            continue
    return None


class LiveLogger(TrainerCallback):
    """Logs Trainer metrics to dvclive at the Trainer's global step. (transformers' own
    DVCLiveCallback advances dvclive's step on every log call, so train and eval points of the
    same step land on different x values.)"""

    def __init__(self, live: Live):
        self.live = live

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.live.step = state.global_step
        for key, value in (logs or {}).items():
            if key.removeprefix("eval_").rpartition(".")[2] in ("loss", "grad_norm", "learning_rate", "accuracy", "f1_macro", *NUMBER_METRICS):  # shape.accuracy too
                name = key.replace("eval_", "eval/") if key.startswith("eval_") else f"train/{key}"
                self.live.log_metric(name, value)
        self.live.make_summary()


class EvaluationLines(TrainerCallback):
    """Without a terminal (logs, CI, a Prefect worker): one line per evaluation, where the progress bar would be."""

    def __init__(self, run_name: str):
        self.run_name, self.started = run_name, time.monotonic()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero:
            scores = ", ".join(f"{key.removeprefix('eval_')} {value:.4g}" for key, value in (metrics or {}).items()
                               if isinstance(value, float) and not key.endswith(("_runtime", "_per_second")))
            print(f"{self.run_name}: step {state.global_step}/{state.max_steps}, epoch {state.epoch or 0:.2f}, "
                  f"{time.monotonic() - self.started:.0f} s: val {scores}", flush=True)


class EpochClock(TrainerCallback):
    """Tells datasets that augment online which epoch it is, so each epoch draws new, seeded augmentations."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = int(state.epoch or 0)


class EarlyStoppingAfter(EarlyStoppingCallback):
    """The Trainer's early stopping, except that it cannot end the run before `stop_after_step` (the schedule's: half of it
    when the patience was derived); evaluations before it still count as stalled. Its arguments are in its state, so a
    resumed run gets the same (restore_callback_states_from_checkpoint)."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float | None = 0.0, stop_after_step: int = 0):
        super().__init__(early_stopping_patience, early_stopping_threshold)
        self.stop_after_step = stop_after_step

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        stopping = control.should_training_stop  # another callback's stop (a search's pruner) is left alone
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if state.global_step < self.stop_after_step and not stopping:
            control.should_training_stop = False

    def state(self) -> dict:
        saved = super().state()
        saved["args"]["stop_after_step"] = self.stop_after_step
        return saved


def _trim_live_history(live_dir: Path, last_step: int) -> None:
    """A killed run may have logged steps after its last checkpoint, or died writing a file: drop those steps, a torn last
    row and a torn summary (dvclive writes metrics.json again at the next log) before resuming."""
    for tsv in live_dir.glob("plots/metrics/**/*.tsv"):
        with tsv.open() as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            tsv.unlink()
            continue
        step = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and r[step].isdigit() and int(r[step]) <= last_step]
        with tsv.open("w", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows(kept)
    summary = live_dir / "metrics.json"
    try:
        json.loads(summary.read_text()) if summary.exists() else None
    except ValueError:
        summary.unlink()


def _scores(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    scores = metrics.headline(actual, predicted)
    return {name: scores[name] for name in ("accuracy", "f1_macro")}


def _metrics_of(heads: Heads, label_map: dict):
    """The Trainer's compute_metrics: accuracy and macro F1 (several heads: each head's, and their means); a numeric label's
    rmse, mae, r2 and spearman in its own units (finetune/scoring/numbers.py)."""
    if numbers.is_number(label_map):
        return lambda prediction: number_scores.scores(prediction.label_ids, numbers.in_units(prediction.predictions, label_map)[:, 0])
    if heads.multi:
        return lambda prediction: head_metrics(heads, prediction.predictions, prediction.label_ids, _scores, number_scores.scores)
    return lambda prediction: _scores(prediction.label_ids, np.argmax(prediction.predictions, axis=-1))


def fit(task, params: Params, splits: dict[str, pd.DataFrame], label_map: dict, model_dir: Path, live_dir: Path, run_name: str,
        extra_callbacks: tuple = ()) -> dict:
    """Fine-tune task.models' model on splits["train"], select on splits["val"] (by task.val_metrics); save the best model
    to model_dir and its dvclive curves to live_dir. Ensemble members and search trials call this with their own params
    and features (trials add a callback that reports to Optuna's pruner)."""
    train = params.train
    device, bf16 = resolve_device(train.device)
    if distributed.launches(train):
        if extra_callbacks:
            raise UserError(f"{run_name}: train.processes {train.processes} trains in torchrun's processes, which this process's callbacks "
                            f"({', '.join(type(c).__name__ for c in extra_callbacks)}) cannot reach; use train.processes 1")
        if device == "cuda" and train.processes > torch.cuda.device_count():
            raise UserError(f"train.processes is {train.processes} but {torch.cuda.device_count()} CUDA GPUs are visible (one process per GPU)")
        return distributed.launch(task, params, splits, label_map, model_dir, live_dir, run_name,
                                  paths.CHECKPOINTS / f"{fingerprint(params, run_name)}-ddp")
    writer = distributed.writes_outputs()  # False in torchrun ranks other than rank 0
    speed = speed_settings(train.speed, device)
    models = task.models

    run_dir = paths.CHECKPOINTS / fingerprint(params, run_name)
    resume = last_complete_checkpoint(run_dir)
    if resume:
        print(f"{run_name}: resuming from {resume}")
    elif run_dir.exists() and writer:
        shutil.rmtree(run_dir)  # a run killed before its first checkpoint: nothing to keep

    heads = Heads.of(label_map)
    imbalance = train.loss in ("weighted_cross_entropy", "focal") or train.class_weights is not None or train.balance != "none"
    if imbalance and (heads.multi or not task.has_labels):
        raise UserError(f"train.loss {train.loss}, train.class_weights and train.balance are for classifiers with one head; "
                        f"{'data.label_columns names several' if heads.multi else f'the {task.name} task has no classes'}: "
                        "use train.loss cross_entropy, class_weights null, balance none")
    train_rows, balancing = losses.balanced(splits["train"], train.balance, train.seed)
    splits = {**splits, "train": train_rows}
    if balancing:
        print(f"{run_name}: train.balance {train.balance}: {balancing['rows_before']} -> {balancing['rows_after']} train rows, "
              f"{balancing['rows_per_class']} per class")
    classes = label_map["labels"] if imbalance else []
    weights = losses.class_weights(train, np.bincount(splits["train"]["label"], minlength=len(classes)), classes) if imbalance else None

    set_seed(train.seed)  # before the model: the new classifier head is drawn from this seed
    source = models.source(train.model)
    processor = models.load_processor(source, train.trust_remote_code)
    model = apply_strategy(models.load_model(source, label_map, train), train)
    parameters = describe(model, train)
    rates = ", ".join(f"{group['group']} {group['learning_rate']:.3g}" for group in parameters["groups"])
    print(f"{run_name}: {train.strategy}, {parameters['trainable']:,} of {parameters['parameters']:,} parameters trainable "
          f"({100 * parameters['trainable_share']:.2f} %); peak learning rates: {rates}")
    if device == "cuda":
        print(f"{run_name}: on {torch.cuda.get_device_name()}, {'bf16' if bf16 else 'fp32'}; speed settings {speed}")
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun sets it
    train_set = models.dataset(splits["train"], label_map, processor, params.preprocess, seed=train.seed)
    # the items the loader draws: a row's every window under text chunks (planned from the rows, a chunked run got twice
    # the epochs' worth of steps it planned for)
    schedule = plan(train, len(train_set), processes, drop_last=has_batchnorm(model))
    splits_per_batch, memory_facts = memory.micro_batches(train, model, train_set, models.collator(processor), device, processes)
    if splits_per_batch > 1:
        print(f"{run_name}: {memory_facts['why']}")
    print(f"{run_name}: {schedule.steps} optimizer steps: {schedule.why}")
    steps = {"eval_strategy": "steps", "eval_steps": schedule.eval_steps, "save_strategy": "steps", "save_steps": schedule.eval_steps}
    if schedule.eval_steps is None:
        steps = {"eval_strategy": "epoch", "save_strategy": "epoch"}
    metric = train.early_stopping.metric
    args = TrainingArguments(
        output_dir=str(run_dir),
        num_train_epochs=schedule.epochs,
        per_device_train_batch_size=train.batch_size // splits_per_batch,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps * splits_per_batch,
        activation_checkpointing=train.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_ratio,  # transformers 5 takes a float < 1 here as a ratio
        lr_scheduler_type=train.lr_scheduler,
        # the Trainer's label smoother reads model.config, which a torchvision CNN has not: our loss smooths there (strategies.py)
        label_smoothing_factor=train.label_smoothing if hasattr(model, "config") else 0.0,
        logging_steps=train.logging_steps,
        **steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        restore_callback_states_from_checkpoint=True,  # early-stopping patience survives a resume
        metric_for_best_model=metric,
        greater_is_better=metric.rpartition(".")[2] not in LOWER_IS_BETTER,
        seed=train.seed,
        data_seed=train.seed,
        use_cpu=device == "cpu",
        bf16=bf16,
        report_to=train.report_to or "none",
        run_name=run_name,  # the run's name in MLflow / W&B
        disable_tqdm=not sys.stderr.isatty(),  # a progress bar on a terminal; in logs one line per evaluation (EvaluationLines)
        dataloader_num_workers=speed["dataloader_workers"],
        torch_compile=speed["compile"],
        # CUDA only: elsewhere these keep their defaults, so a CPU run's recorded training_args.json is unchanged too
        # (tf32 None: torch's own defaults, FP32 matmuls and TF32 cuDNN convolutions)
        **({"tf32": speed["tf32"] or None, "dataloader_pin_memory": speed["pin_memory"]} if device == "cuda" else {}),
        # torchrun ranks only. average_tokens_across_devices off: on, the Trainer multiplies each rank's loss by the processes
        # for models whose forward takes **kwargs, expecting a loss summed over a global count; BERT's is a mean, so its
        # loss and gradients came out doubled with 2 processes
        **({"ddp_backend": "nccl" if device == "cuda" else "gloo", "average_tokens_across_devices": False} if distributed.in_rank() else {}),
    )
    head_loss = HeadLoss(heads, train.head_weights or {}, train.label_smoothing).to(args.device) if heads.multi else None
    augmenter = models.batch_augmenter(params.preprocess, len(label_map.get("labels", [])))
    if augmenter is not None and numbers.is_number(label_map):
        raise UserError("preprocess.augment mixup/cutmix mix class labels; with data.label_type number set them to 0")
    if head_loss is not None and augmenter is not None:
        raise UserError("preprocess.augment mixup/cutmix mix the labels of one head; with data.label_columns (several) set them to 0")
    callbacks = [EpochClock(train_set)] + ([EvaluationLines(run_name)] if args.disable_tqdm else [])
    if "tensorboard" in train.report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(paths.TENSORBOARD / run_name.replace(" ", "-"))
    if "wandb" in train.report_to:
        os.environ.setdefault("WANDB_MODE", "offline")  # nothing leaves the machine unless the user says so
    if writer:
        if resume:  # before dvclive reads its files back
            _trim_live_history(run_dir / "live", int(resume.name.split("-")[1]))
        live = Live(str(run_dir / "live"), resume=resume is not None, dvcyaml=None, save_dvc_exp=False, report=None)
        callbacks.append(LiveLogger(live))
    if schedule.patience:
        callbacks.append(EarlyStoppingAfter(early_stopping_patience=schedule.patience, stop_after_step=schedule.stop_after_step))
    if train.strategy == "gradual_unfreeze":
        callbacks.append(GradualUnfreeze(model, train))
    if train.strategy == "adaptive":
        adaptive = train.adaptive
        callbacks.append(AdaptiveLayers(adaptive.policy, adaptive.patience, adaptive.min_delta, adaptive.rewarm_steps, adaptive.threshold,
                                        train.batchnorm, adaptive.check_every, adaptive.max_frozen))
    callbacks += extra_callbacks
    trainer = StrategyTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=models.dataset(splits["val"], label_map, processor),
        data_collator=models.collator(processor),
        processing_class=processor,
        # a task scoring only loss on val (a causal LM) gets none: the Trainer then keeps no predictions (blocks x vocab)
        compute_metrics=_metrics_of(heads, label_map) if set(task.val_metrics) - {"loss"} else None,
        callbacks=callbacks,
        train_params=train,
        fused_optimizer=speed["fused_optimizer"],
        batch_augmenter=augmenter,
        head_loss=head_loss,
        class_weights=weights,
        target=label_map.get("target"),
    )
    if args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # it prints every logged loss; EvaluationLines prints each evaluation
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if writer:
        live.end()
        trainer.remove_callback(LiveLogger)
    best = trainer.evaluate()  # the restored best model, scored on val (all of it: the ranks' predictions are gathered)

    parameters["trainable_at_end"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # a resumed run's callback is the one the Trainer rebuilt from the checkpoint's state
    adapted = next((callback for callback in trainer.callback_handler.callbacks if isinstance(callback, AdaptiveLayers)), None)
    if adapted is not None:
        parameters["adaptive"] = {"policy": train.adaptive.policy, "timeline": adapted.timeline}
    parameters |= trainer.batchnorm_report()
    if writer:
        with atomic_path(model_dir) as folder:
            folder.mkdir()
            if train.strategy == "lora":  # the adapter (small, for peft users) and the merged model every later stage loads
                trainer.model.save_pretrained(str(folder / "adapter"))
                models.save_trained(trainer.model.merge_and_unload(), processor, folder)
            else:
                models.save_trained(trainer.model, processor, folder)
            # without output_dir: it names the run's fingerprint folder, which hashes the code, so any code edit
            # changed this file (and the model folder's DVC hash) even when the weights came out identical
            # (nor disable_tqdm: whether stderr was a terminal)
            recorded = {key: value for key, value in json.loads(args.to_json_string()).items() if key not in ("output_dir", "disable_tqdm")}
            (folder / "training_args.json").write_text(json.dumps(recorded, indent=2, sort_keys=True))
            write_json(folder / "label_map.json", label_map)
            write_json(folder / paths.TRAINED_WITH, {"task": task.name, "params": params.model_dump(mode="json")})
        with atomic_path(live_dir) as folder:
            shutil.copytree(run_dir / "live", folder)
        shutil.rmtree(run_dir)  # finished: the checkpoints are no longer needed to resume
    summary = {
        "device": device,
        "bf16": bf16,
        "speed": speed,
        "resumed": resume is not None,
        "schedule": schedule.as_dict(),
        **({"memory": memory_facts} if memory_facts else {}),
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0, 3),
        "best_step": trainer.state.best_global_step,
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        "train_samples_per_second": round(result.metrics["train_samples_per_second"], 2),
        "train_runtime_s": round(result.metrics["train_runtime"], 1),
        "val": {name.removeprefix("eval_"): value for name, value in best.items()
                if name.removeprefix("eval_").rpartition(".")[2] in ("loss", "accuracy", "f1_macro", *NUMBER_METRICS)},
        **({"imbalance": {"loss": train.loss, "class_weights": None if weights is None else dict(zip(classes, weights.round(decimals=4).tolist())),
                          **({"focal_gamma": train.focal_gamma} if train.loss == "focal" else {}), "balance": balancing or None}}
           if imbalance else {}),
        **({"head_weights": head_loss.learned(heads.classes) or dict(zip(heads.classes, head_loss.weights.tolist()))} if heads.multi else {}),
        "parameters": parameters,
        # the learning rate is used as set whatever the global batch: scaling it with the processes is left to the user
        "parallel": {"processes": args.world_size, "backend": torch.distributed.get_backend() if distributed.in_rank() else None,
                     "threads_per_process": torch.get_num_threads(), "batch_per_process": train.batch_size,
                     "global_batch": train.batch_size * args.world_size, "learning_rate": train.learning_rate},
    }
    print(f"{run_name}: {summary['steps']} steps on {device}, best val {summary['val']}")
    return summary
