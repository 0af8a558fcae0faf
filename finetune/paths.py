"""Where each stage reads and writes. dvc.yaml names the same paths (tests/test_dvc_yaml.py checks)."""
import os
from pathlib import Path

PARAMS = Path("params.yaml")
RAW_DATA = Path("data/raw")  # user data lives here so DVC tracks its content (a dep of ingest)
PRETRAINED = Path("models/pretrained")  # local pretrained models, tracked the same way

INGESTED = Path("data/ingested.parquet")
QUARANTINE = Path("data/quarantine")
PREPARED = Path("data/prepared")
LABEL_MAP = PREPARED / "label_map.json"

MODEL = Path("models/model")
# in every trained model's folder, beside label_map.json: the task and the params it was trained with, so `finetune
# predict` reads, normalizes and featurizes new rows exactly as training did wherever the folder is copied
TRAINED_WITH = "pipeline.json"
CHECKPOINTS = Path(".cache/checkpoints")  # resumable Trainer checkpoints, one folder per run fingerprint
TENSORBOARD = Path(".cache/tensorboard")  # train.report_to: tensorboard, one folder per run (`tensorboard --logdir .cache/tensorboard`)

REPORTS = Path("reports")
INGEST_SUMMARY = REPORTS / "ingest.json"
PREPROCESS_SUMMARY = REPORTS / "preprocess.json"
TRAIN_SUMMARY = REPORTS / "train.json"
TRAIN_LIVE = REPORTS / "train_live"  # dvclive: per-step training curves
METRICS = REPORTS / "metrics.json"
EVALUATION = REPORTS / "evaluate"
REPORT_HTML = REPORTS / "report.html"
# every picture the run drew, gathered by the report stage: dvc.yaml declares this folder (and dvclive's curves) as its
# plots, so `dvc plots show` renders what THIS run made; a declared file a task never writes would fail to load
PLOTS = REPORTS / "plots"

MEMBER_MODELS = Path("models/members")  # one fine-tuned model per ensemble member
MEMBER_REPORTS = Path("reports/members")  # per member: probabilities.parquet, live/ (the ensemble's input)
MEMBER_SUMMARIES = Path("reports/member_summaries")  # per member NAME.json: scores + training time (not an ensemble input)
PRIMARY_PROBABILITIES = EVALUATION / "probabilities.parquet"  # the train stage's model as a member
ENSEMBLE_METRICS = REPORTS / "ensemble.json"
ENSEMBLE = REPORTS / "ensemble"  # predictions.csv, changes.csv, confusion.png, stacker.json
ENSEMBLE_MODEL = Path("models/ensemble")  # what `finetune predict --model models/ensemble` applies: members, temperatures, weights, stacker

COMPRESSED = Path("models/compressed")  # one folder per compress method: int8/, pruned/, distilled/
COMPRESS_METRICS = REPORTS / "compress.json"
COMPRESS = REPORTS / "compress"  # tradeoff.png, predictions.csv
EXPLAIN_METRICS = REPORTS / "explain.json"
EXPLAIN = REPORTS / "explain"  # attributions.json: every token's scores for every explained example
SEARCH = REPORTS / "search"  # python -m flows.search: trials.csv, summary.json, history.png, importance.png (git-tracked)
DVC_CACHE = Path(".dvc/cache")  # a `dvc add`ed file may be a link into it (cache.type symlink/hardlink)


def outside(path: str | Path, folder: Path) -> str | None:
    """Why `path` may not be read as a user input, or None when it lies inside the project's `folder`.
    Links are followed (a link in data/raw to /etc/passwd is outside); a link into the project's DVC
    cache is what `dvc add` makes with a link cache type, so it counts as inside. Only files under
    data/raw and models/pretrained are DVC dependencies: reading anything else would leave results
    silently stale when it changes, and would let a params file read any file the user can. The folder itself may be a
    link (data/raw on a bigger disk; a builtin's package folder in a virtualenv reached through a link): a file is
    placed inside when its name is under the folder's name or under the folder's target."""
    project = Path.cwd().resolve()
    named = Path(os.path.abspath(project / folder))  # the folder before links are followed
    allowed = named.resolve()
    placed = Path(os.path.abspath(path))  # where the name points before links are followed
    target = Path(path).resolve()
    placed_inside = placed.is_relative_to(named) or placed.is_relative_to(allowed)
    if placed_inside and (target.is_relative_to(allowed) or target.is_relative_to((project / DVC_CACHE).resolve())):
        return None
    where = f"{path} (a link to {target})" if placed != target and placed_inside else str(path)
    return (f"{where} is outside {folder}/: only files there are DVC dependencies, so results stay in step with them; "
            f"copy it into {folder}/ (a big one: `dvc add` it there, or `dvc import` it from its repository)")
