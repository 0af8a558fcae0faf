"""Training throughput of our train stage's input path vs Hugging Face's run_classification default.

Same model (params.yaml's train.model), same prepared data (data/prepared, from `dvc repro preprocess`),
same examples, epochs, batch size, seed and Trainer arguments; the only difference is what the
examples look like on the way in:
  ours      : our Task's tokenization truncated to preprocess.max_length + dynamic per-batch padding
  reference : run_classification.py's defaults: every example padded to max_seq_length=128
Prints samples/s for both, the ratio, and both test accuracies (measured in the same run: these
machines are noisy, so only the ratio is meaningful).

    python bench/train_throughput.py [--rows 2000] [--epochs 1] [--dropout 0]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from transformers import Trainer, TrainingArguments, default_data_collator, set_seed  # noqa: E402

from finetune import paths  # noqa: E402
from finetune.config.params import load_params  # noqa: E402
from finetune.data.features import FeatureDataset  # noqa: E402
from finetune.io import read_json  # noqa: E402
from finetune.tasks import get_task  # noqa: E402


def measure(name, task, params, label_map, train_set, test_set, collator, epochs: float, dropout=None, use_cpu=True) -> dict:
    """A plain Trainer: default TrainingArguments but for the recipe (epochs, batch, learning rate, weight decay, warmup,
    seed); no evaluation, checkpoint or logging while training. Also the reference of bench/gpu_check.py (use_cpu=False)."""
    set_seed(params.train.seed)
    source = task.models.source(params.train.model)
    model = task.models.load_model(source, label_map, params.train.model_copy(update={"dropout": dropout}))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=params.train.batch_size,
            per_device_eval_batch_size=params.train.eval_batch_size, learning_rate=params.train.learning_rate,
            weight_decay=params.train.weight_decay, warmup_steps=params.train.warmup_ratio, seed=params.train.seed,
            save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, logging_strategy="no", use_cpu=use_cpu,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=collator)
        result = trainer.train()
        predicted = trainer.predict(test_set)
    # predict() returns rows in dataset order here (no length grouping); label_ids guard it anyway
    accuracy = float((predicted.predictions.argmax(-1) == predicted.label_ids).mean())
    return {"name": name, "samples_per_s": result.metrics["train_samples_per_second"], "test_accuracy": accuracy}


def padded_like_run_classification(processor, frame: pd.DataFrame) -> pd.DataFrame:
    """run_classification.py's default features: every example truncated and padded to max_seq_length=128."""
    encoded = processor(frame["input"].tolist(), truncation=True, max_length=128, padding="max_length")
    return pd.DataFrame({k: list(v) for k, v in encoded.items()}).assign(label=frame["label"].to_numpy())


def main() -> None:
    params = load_params()
    task = get_task(params.task)
    label_map = read_json(paths.LABEL_MAP)
    train = pd.read_parquet(paths.PREPARED / "train.parquet")
    train = train[~train["augmented"]].sample(n=min(args_cli.rows, len(train)), random_state=0)
    test = pd.read_parquet(paths.PREPARED / "test.parquet")
    processor = task.models.load_processor(task.models.source(params.train.model), False)

    features = label_map["features"]
    runs = {"epochs": args_cli.epochs, "dropout": args_cli.dropout}
    ours = measure("ours (dynamic padding)", task, params, label_map, FeatureDataset(train, features),
                   FeatureDataset(test, features), task.models.collator(processor), **runs)
    padded = {name: padded_like_run_classification(processor, frame) for name, frame in (("train", train), ("test", test))}
    reference = measure("HF run_classification default (pad to 128)", task, params, label_map, FeatureDataset(padded["train"], features),
                        FeatureDataset(padded["test"], features), default_data_collator, **runs)
    for row, frame in ((ours, train), (reference, padded["train"])):
        row["tokens_per_example"] = float(np.mean([len(x) for x in frame["input_ids"]]))

    for row in (ours, reference):
        print(f"{row['name']:45s} {row['samples_per_s']:7.1f} samples/s  {row['tokens_per_example']:6.1f} tokens/example  "
              f"test accuracy {row['test_accuracy']:.4f}")
    print(f"speed-up: {ours['samples_per_s'] / reference['samples_per_s']:.2f}x; "
          f"accuracy difference: {100 * (ours['test_accuracy'] - reference['test_accuracy']):+.2f} pt "
          f"({len(train)} train rows, {args_cli.epochs} epoch(s), batch {params.train.batch_size}, dropout {args_cli.dropout})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="train examples to use (default %(default)s)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--dropout", type=float, default=None,
                        help="override dropout; 0 makes both runs follow the same trajectory, since dropout masks are "
                             "drawn per tensor shape and padding changes the shapes (default: the model's own)")
    args_cli = parser.parse_args()
    main()
