"""The shared sections of params.yaml, one class each, holding the keys every task has (params.py composes a task's
schema from them and the task's own sections, which extend these). A field's comment is its documentation: params.yaml
shows it (files.py). Over 400 lines because it is the whole shared schema, the one page a reader of params.yaml wants
in one place; a task's own keys are in its folder."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from finetune.paths import PRETRAINED, RAW_DATA, outside

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
ECHO_LIMIT = 80  # characters of a rejected value shown in an error


class Section(BaseModel):
    # NaN and infinity are refused everywhere: no param of ours means anything with them
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _partial_sections_keep_their_defaults(cls, data):
        """A nested section given in part keeps the rest of ITS default here, not of its class: a task's default
        compress.prune (structure: channels) stays channels when a config sets only prune.sparsity."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            if isinstance(field.default, BaseModel) and isinstance(data.get(name), dict):
                merged[name] = _over(field.default, data[name])
        return merged


def _over(default: BaseModel, given: dict) -> dict:
    """given over a section's default, section by section (maps of entries, such as members or search axes, are replaced
    whole: they are the user's list, not a section's keys)."""
    merged = {name: getattr(default, name) for name in type(default).model_fields}
    for key, value in given.items():
        current = getattr(default, key, None)
        merged[key] = _over(current, value) if isinstance(current, BaseModel) and isinstance(value, dict) else value
    return merged


class Splits(Section):
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self


SplitName = Literal["train", "val", "test"]
HEAD_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a task of data.label_columns: it names metrics (<task>.f1_macro) and report files


def label_columns(data) -> dict[str, str]:
    """{head: column} of data.label_columns; {} = one label (data.label_column). finetune/data/heads.py: the rest of several heads."""
    columns = getattr(data, "label_columns", None) or {}
    return dict(columns) if isinstance(columns, dict) else {column: column for column in columns}


class Data(Section):
    """The keys every task shares. A task subclasses it to add the column(s) holding its input
    (text_column, image_column...) and to name its builtin sources and the folder-or-file it reads."""
    BUILTINS: ClassVar[tuple[str, ...]] = ()
    READS_FOLDERS: ClassVar[bool] = False  # e.g. an ImageFolder directory as data.source

    source: str  # builtin:NAME, or a table (.csv/.tsv/.jsonl/.parquet) or folder under data/raw/
    label_column: str = "label"  # the column of YOUR table holding each row's label
    # several labels per row, one head each (finetune/data/heads.py): {head: column} or a list of columns (each its head's
    # name); replaces label_column. null = one label
    label_columns: list[str] | dict[str, str] | None = None
    # category: each label is a class | number: a score, rating or count (a regression head, finetune/data/numbers.py;
    # train.loss mse | huber | mae, selected on val rmse by default); with label_columns: number_heads
    label_type: Literal["category", "number"] = "category"
    # with label_columns: the heads whose labels are numbers, each a regression head (mse on its standardised label) beside
    # the class heads; at least one head stays classes
    number_heads: list[str] = []
    split_column: str | None = None  # optional column of train/val/test to use instead of a random split
    keep_labels: list[str | int | float | bool] | None = None  # only these labels (as the data writes them: 7, "007", true); null keeps every label
    confidence_column: str | None = None  # optional column of each row's label confidence (0..1)
    min_confidence: float | None = Field(None, ge=0, le=1)  # drop rows whose confidence is below this (or missing); null = keep all
    # a seeded, stratified sample: of the whole table (a number) or of each split the data comes with
    # (a mapping, e.g. {train: 12000, test: null}, for a split column or a builtin's own split)
    max_rows: Annotated[int, Field(ge=10)] | dict[SplitName, int | None] | None = None
    splits: Splits = Splits()
    seed: int = 42  # the split and every sample are seeded: the same data gives the same splits
    on_bad_rows: Literal["error", "skip"] = "error"  # error: stop at the first bad row | skip: quarantine it with the reason (data/quarantine/)

    @model_validator(mode="after")
    def _source_exists(self):
        if self.source.startswith("builtin:"):
            if self.source not in self.BUILTINS:
                raise ValueError(f"unknown builtin source {self.source!r}; expected one of {self.BUILTINS}")
            return self
        if problem := outside(self.source, RAW_DATA):
            raise ValueError(problem)
        path = Path(self.source)
        if self.READS_FOLDERS and path.is_dir():
            return self
        if path.suffix.lower() not in TABLE_SUFFIXES:
            folder = " or a folder of class sub-folders" if self.READS_FOLDERS else ""
            raise ValueError(f"{self.source!r} is not a supported table; expected a file ending in {TABLE_SUFFIXES}{folder}")
        if not path.is_file():
            raise ValueError(f"file {self.source!r} does not exist (relative paths start at the project root)")
        return self

    @model_validator(mode="after")
    def _heads_once(self):
        if self.label_columns is None:
            return self
        heads = list(self.label_columns) if isinstance(self.label_columns, dict) else self.label_columns
        columns = list(self.label_columns.values()) if isinstance(self.label_columns, dict) else self.label_columns
        twice = sorted({column for column in columns if columns.count(column) > 1})
        if twice:
            raise ValueError(f"label_columns lists column(s) {twice} twice; each head reads its own column")
        if len(heads) < 2:
            raise ValueError(f"label_columns {self.label_columns}: name two heads or more (one label: label_column)")
        bad = [head for head in heads if not HEAD_NAME.fullmatch(head)]
        if bad:
            raise ValueError(f"label_columns: head name(s) {bad} must be letters, digits, _ or - (they name metrics: <head>.f1_macro)")
        if self.keep_labels is not None:
            raise ValueError("keep_labels filters one label; with label_columns (several) it is not supported yet: filter the table")
        return self

    @model_validator(mode="after")
    def _numbers_one_head(self):
        if self.label_type == "number" and self.label_columns is not None:
            raise ValueError("label_type number predicts one numeric label column; with label_columns name the heads that are numbers "
                             "in number_heads")
        heads = list(label_columns(self))
        if self.number_heads and not heads:
            raise ValueError("number_heads names heads of label_columns; with one label column use label_type number")
        unknown = [head for head in self.number_heads if head not in heads]
        if unknown:
            raise ValueError(f"number_heads {unknown} are not heads of label_columns ({heads})")
        if heads and set(heads) <= set(self.number_heads):
            raise ValueError(f"number_heads {self.number_heads}: every head is a number; keep at least one class head (the splits are "
                             "stratified on it and the means select the model), or predict one number with label_type number")
        if self.label_type == "number" and self.keep_labels is not None:
            raise ValueError("keep_labels keeps classes; with label_type number filter the table instead")
        return self

    @model_validator(mode="after")
    def _confidence_pair(self):
        if self.min_confidence is not None and self.confidence_column is None and not self.source.startswith("builtin:"):
            raise ValueError("min_confidence needs confidence_column (the column holding each row's confidence)")
        return self

    @model_validator(mode="after")
    def _sane_max_rows(self):
        if isinstance(self.max_rows, dict) and any(n is not None and n < 10 for n in self.max_rows.values()):
            raise ValueError(f"max_rows per split must be >= 10 or null, got {self.max_rows}")
        return self


class EarlyStopping(Section):
    metric: str = "f1_macro"  # a val metric of the task (checked by Params), or with label_columns <head>.f1_macro / <head>.accuracy; numbers: rmse | mae | r2 | spearman
    # evaluations without improvement before stopping; 0 = never stop early; null = from the number of evaluations (none up to 4,
    # then a quarter of them, at least 3: finetune/training/schedule.py)
    patience: int | None = Field(None, ge=0, le=10_000)


STRATEGIES = ("full", "partial", "linear_probe", "gradual_unfreeze", "adaptive", "lora")


class Lora(Section):
    rank: int = Field(8, ge=1, le=4096)  # rank of each adapter's update
    alpha: float = Field(16, gt=0, le=1e6)  # the update is scaled by alpha / rank
    dropout: float = Field(0.1, ge=0, lt=1)  # dropout on the adapters' input
    target_modules: list[str] | None = None  # layers that get adapters; null = peft's default for the architecture


class Adaptive(Section):
    """train.strategy adaptive: which layer groups train follows how training goes (finetune/training/adaptive.py)."""
    # unfreeze_on_plateau: the head first; the next group down opens when the val metric stalls | freeze_converged
    # (AutoFreeze, Liu et al. 2021): every group first; groups freeze bottom-up once their gradients settle
    policy: Literal["unfreeze_on_plateau", "freeze_converged"] = "unfreeze_on_plateau"
    patience: int = Field(1, ge=1, le=1000)  # unfreeze_on_plateau: evaluations without a better val metric before the next group opens
    min_delta: float = Field(0.0, ge=0, le=1e6)  # unfreeze_on_plateau: "better" means beating the best by more than this
    # unfreeze_on_plateau: optimizer steps over which a newly opened group's learning rate ramps up from 0; null = the run's warm-up
    rewarm_steps: int | None = Field(None, ge=0, le=10_000_000)
    # freeze_converged: a group freezes when its mean gradient norm moved less than this share between two decisions
    threshold: float = Field(0.1, gt=0, lt=10)
    # freeze_converged: decide every this many optimizer steps, from gradient norms alone (no evaluation needed, so the run
    # can evaluate once per epoch); null = decide at each evaluation
    check_every: int | None = Field(None, ge=1, le=10_000_000)
    # freeze_converged: at most this share of the layer groups below the head may freeze (the bottom ones); null = all
    max_frozen: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _freeze_settings_need_freeze_converged(self):
        if self.check_every is not None and self.policy != "freeze_converged":
            raise ValueError(f"check_every: {self.check_every} sets how often freeze_converged decides; policy {self.policy} decides at "
                             "evaluations (set eval_steps instead, or remove check_every)")
        if self.max_frozen is not None and self.policy != "freeze_converged":
            raise ValueError(f"max_frozen: {self.max_frozen} limits how deep freeze_converged freezes; policy {self.policy} never "
                             "freezes (remove max_frozen)")
        return self


class Speed(Section):
    """train.speed: throughput only. The CUDA-only settings (tf32, fused_optimizer, pin_memory) apply only when training
    on CUDA, so a CPU run is bit for bit what it was without them. Defaults follow the PyTorch and transformers
    performance guides; not yet measured on a GPU in this project (README "GPU")."""
    tf32: bool = True  # CUDA, Ampere or newer: fp32 matmuls in TensorFloat-32; false = torch's default (TF32 in convolutions only)
    fused_optimizer: bool = True  # CUDA: AdamW / SGD update every weight in one fused kernel instead of a few per tensor group
    pin_memory: bool = True  # CUDA: batches in page-locked memory, so the copy to the GPU can overlap compute
    dataloader_workers: int = Field(0, ge=0, le=256)  # any device: processes preparing batches (same batches); 0 = this one
    compile: bool = False  # any device: torch.compile the model; slower first steps, a recompile per new batch shape at first
    # (no group_by_length: the Trainer's length-grouped sampler shuffles with torch's global RNG, not data_seed, so a run
    # resumed mid-epoch would not see the same batches; dynamic padding already drops most padding of short texts)


REPORT_TO = ("tensorboard", "mlflow", "wandb")  # train.report_to: Trainer integrations a team may already run


class Train(Section):
    model: str  # builtin:NAME or a local model under models/pretrained/ (nothing is downloaded)
    trust_remote_code: bool = False  # run code shipped with a model: only params.yaml itself may turn it on (never -S or the UI)
    # passes over the train split (fractions allowed); null = 3, or more on a small split: enough for min_steps (finetune/training/schedule.py)
    epochs: float | None = Field(None, gt=0, le=10_000)
    min_steps: int = Field(400, ge=0, le=10_000_000)  # epochs null: the fewest optimizer steps a run gets (at most 100 epochs)
    batch_size: int = Field(32, ge=1, le=65_536)  # rows per step (per process)
    gradient_accumulation_steps: int = Field(1, ge=1, le=65_536)  # batches per optimizer step: an effective batch of batch_size x this
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30 % more time
    # GiB a process may use; a batch estimated above it is computed in micro-batches (the same batch: finetune/training/memory.py);
    # auto: 90 % of the GPU's free memory, or half the available RAM | null: never split
    memory_budget_gib: Annotated[float, Field(gt=0, le=1e6)] | Literal["auto"] | None = "auto"
    eval_batch_size: int = Field(128, ge=1, le=65_536)  # rows per forward pass when scoring (val, test, members, compressed models)
    learning_rate: float = Field(5e-5, gt=0, lt=1)  # peak learning rate (of the head; see layer_lr_decay)
    weight_decay: float = Field(0.01, ge=0, le=10)  # AdamW's decoupled L2
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # share of the steps the learning rate warms up over
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine", "polynomial"] = "linear"  # constant | constant_with_warmup | linear | cosine | polynomial
    dropout: float | None = Field(None, ge=0, lt=1)  # overrides the model's dropout
    eval_steps: int | None = Field(None, ge=1, le=10_000_000)  # None: evaluate (and checkpoint) once per epoch
    logging_steps: int = Field(10, ge=1, le=10_000_000)  # steps between logged training losses (dvclive curves)
    # also send the curves to (dvclive always gets them): tensorboard (.cache/tensorboard/RUN) | mlflow (MLFLOW_TRACKING_URI,
    # default ./mlruns) | wandb (offline unless WANDB_MODE is set); [] = none. Each needs its package installed
    report_to: list[Literal[REPORT_TO]] = []
    early_stopping: EarlyStopping = EarlyStopping()
    seed: int = 42  # weights of the new head, dropout, batch order: the same seed gives the same model
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA (bf16 where supported) if present, else CPU | cpu | cuda
    # data-parallel processes (torchrun, finetune/training/distributed.py), each on batch_size rows of every step; 1 = this process
    processes: int = Field(1, ge=1, le=1024)
    speed: Speed = Speed()
    strategy: Literal[STRATEGIES] = "full"  # what trains: see finetune/training/strategies.py
    freeze_layers: int = Field(0, ge=0, le=10_000)  # partial: the input group and this many bottom blocks stay frozen
    unfreeze_every: float = Field(1, gt=0, le=10_000)  # gradual_unfreeze: epochs between unfreezing the next group down
    adaptive: Adaptive = Adaptive()  # strategy adaptive: its policy and settings
    lora: Lora = Lora()
    layer_lr_decay: float = Field(1.0, gt=0, le=1)  # each layer group down gets this factor more; 1 = one learning rate
    l1: float = Field(0.0, ge=0, le=1)  # l1 * sum|w| of the trained weight matrices, added to the training loss
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # share of each target spread over the other classes
    # classes: cross_entropy | weighted_cross_entropy (each row's loss times its class's weight) | focal ((1 - p)^focal_gamma:
    # rows already right weigh less; for imbalanced classes, one head: finetune/training/losses.py); numbers (data.label_type
    # number): mse | huber (squared up to huber_delta, then linear) | mae, on the label standardised by the train mean and std
    loss: Literal["cross_entropy", "weighted_cross_entropy", "focal", "mse", "huber", "mae"] = "cross_entropy"
    # weighted_cross_entropy / focal: balanced (train rows / (classes x rows of the class)) | {label: weight} (others 1);
    # null = balanced for weighted_cross_entropy, none for focal
    class_weights: dict[str | int | float | bool, Annotated[float, Field(gt=0, le=1e6)]] | Literal["balanced"] | None = None
    focal_gamma: float = Field(2.0, ge=0, le=10)  # focal: the exponent of (1 - p); 0 = cross-entropy
    huber_delta: float = Field(1.0, gt=0, le=100)  # huber: where the loss turns linear, in standard deviations of the train targets
    # the train split's classes resampled (seeded) to the largest class's rows | the smallest's; val and test keep their mix
    balance: Literal["none", "oversample", "undersample"] = "none"
    optimizer: Literal["adamw", "sgd"] = "adamw"  # adamw | sgd
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    batchnorm: Literal["train", "freeze"] = "train"  # BatchNorm of TRAINED blocks: update running stats | keep them (frozen blocks always keep them)
    # several heads (data.label_columns): {head: weight} of each head's loss (unnamed heads: 1) | uncertainty (learned, Kendall
    # et al. 2018: finetune/data/heads.py); null = 1 each
    head_weights: dict[str, Annotated[float, Field(gt=0, le=1e6)]] | Literal["uncertainty"] | None = None

    @field_validator("report_to")
    @classmethod
    def _installed(cls, value):
        import importlib.util

        missing = [name for name in value if importlib.util.find_spec(name) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} not installed in this environment (pip install {' '.join(missing)}), so the "
                             "Trainer could not report there")
        if len(set(value)) != len(value):
            raise ValueError(f"lists one twice: {value}")
        return value

    @model_validator(mode="after")
    def _model_fits_the_task(self, info: ValidationInfo):
        """The task (given in the validation context by parse_params) says whether it can load `model`."""
        from finetune.tasks import get_task

        task = (info.context or {}).get("task")
        problem = None if self.model.startswith("builtin:") else outside(self.model, PRETRAINED)
        problem = problem or (get_task(task).models.check(self.model) if task else None)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _strategy_fits_processes(self):
        if self.processes > 1 and self.strategy in ("gradual_unfreeze", "adaptive"):
            # DDP registers the weights that need gradients when it wraps the model: ones unfrozen later would never be averaged
            raise ValueError(f"processes {self.processes} with strategy {self.strategy}: data-parallel training synchronises only "
                             "the weights trainable from the start; use processes 1 or another strategy")
        return self


class Preprocess(Section):
    """Every key of preprocess is a task's (finetune/tasks/<task>/): how its inputs become model features."""


class Evaluate(Section):
    """The keys are the family's (classifiers: misclassified_rows; generative: prompts and sampling)."""


class Report(Section):
    title: str = Field("Fine-tuning report", max_length=200)  # the page's title
    worst_errors: int = Field(15, ge=0, le=10_000)  # rows shown per table of mistakes


class Member(Section):
    """One ensemble member. `finetune`: the train stage's recipe with `train`/`preprocess` keys
    overridden; or the task's classical model (text: `tfidf`), whose settings sit under its kind's name.
    The task's schema (params_class) narrows `kind` and adds that settings key."""
    kind: str = "finetune"
    train: dict[str, Any] = {}
    preprocess: dict[str, Any] = {}

    @model_validator(mode="after")
    def _overrides_fit_kind(self):
        if self.kind != "finetune" and (self.train or self.preprocess):
            raise ValueError(f"a {self.kind} member takes no train/preprocess overrides (set its `{self.kind}` keys instead)")
        return self

    def classical_settings(self):
        return getattr(self, self.kind)


COMPRESS_METHODS = ("int8", "prune", "distill")
EXPORT_FORMATS = ("onnx",)


class Quantize(Section):
    embeddings: bool = True  # int8 weight-only embedding tables too (about half of MiniLM's weights)
    calibration_batches: int = Field(8, ge=1, le=100_000)  # static int8 (CNNs): batches of 32 train images that fix activation ranges


class Prune(Section):
    # transformers: ffn_neurons (neurons removed: faster) | unstructured (weights zeroed, global L1); CNNs: channels (removed: faster)
    structure: Literal["ffn_neurons", "unstructured", "channels"] = "ffn_neurons"
    sparsity: float = Field(0.5, ge=0, lt=1)  # share of the FFN neurons or channels removed, or of the linear weights zeroed
    recover_epochs: float = Field(1, ge=0, le=10_000)  # then distil from the teacher with the zeros kept; 0 = no recovery


class Distill(Section):
    layers: list[int] | None = None  # teacher blocks the student keeps; null = transformer classifiers: every other one, ending with
    #                                  the top; causal LMs: the half whose removal costs least on train blocks; CNNs: the blocks
    #                                  that change the shape (the repeats of a stage are dropped)
    temperature: float = Field(2.0, gt=0, le=1000)  # softens both models' distributions in the soft-label loss (T^2 keeps its scale)
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the hard-label loss; 1 - alpha goes to the teacher's soft labels
    epochs: float = Field(3, gt=0, le=10_000)  # passes over the train split
    learning_rate: float = Field(1e-4, gt=0, lt=1)  # the student's peak learning rate
    batch_size: int = Field(32, ge=1, le=65_536)  # rows per step


class Latency(Section):
    threads: int | None = Field(None, ge=1, le=4096)  # CPU threads while timing; null = torch's default (the physical cores)
    repeats: int = Field(20, ge=3, le=100_000)  # timed runs per batch size, after warm-up; the median is reported


class Compress(Section):
    teacher: str = "best"  # best: the fine-tuned member with the highest val macro F1 | primary | a finetune member's name
    methods: list[Literal[COMPRESS_METHODS]] = list(COMPRESS_METHODS)  # int8 | prune | distill, each scored against the teacher on the test split
    quantize: Quantize = Quantize()
    prune: Prune = Prune()
    distill: Distill = Distill()
    latency: Latency = Latency()
    export: list[Literal[EXPORT_FORMATS]] = []  # onnx: every model of the table also exported and timed with onnxruntime

    @model_validator(mode="after")
    def _methods_once(self):
        for key, values in (("methods", self.methods), ("export", self.export)):
            if len(set(values)) != len(values):
                raise ValueError(f"{key} lists one twice: {values}")
        return self


class Explain(Section):
    """The keys are the family's and the task's (which attribution methods, how many examples...)."""


class Dimension(Section):
    """One axis of a search space: exactly one of the four keys."""
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    log_uniform: tuple[float, float] | None = None
    integer: tuple[int, int] | None = None  # low..high, both included

    @model_validator(mode="after")
    def _one_non_empty_range(self):
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of choice, uniform, log_uniform, integer (got {given or 'none'})")
        if self.choice is not None and not self.choice:
            raise ValueError("choice is empty")
        low, high = self.uniform or self.log_uniform or self.integer or (0, 1)
        if low > high or (low == high and self.integer is None):
            raise ValueError(f"empty range [{low}, {high}]: low must be below high")
        if self.log_uniform and low <= 0:
            raise ValueError(f"log_uniform needs low > 0, got {low}")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)

    def probe_values(self) -> list:
        """The values that bound this axis: every choice, or the two ends of a range."""
        return list(self.choice) if self.choice is not None else list(getattr(self, self.kind))

    def grid_values(self) -> list | None:
        if self.choice is not None:
            return list(self.choice)
        return list(range(self.integer[0], self.integer[1] + 1)) if self.integer else None


class Pruner(Section):
    enabled: bool = True  # Optuna's MedianPruner, fed every validation evaluation of a trial
    startup_trials: int = Field(2, ge=0, le=100_000)  # trials that run to the end before any is pruned
    warmup_evaluations: int = Field(1, ge=0, le=100_000)  # evaluations of a trial before it may be pruned


SEARCH_METRICS = ("f1_macro", "accuracy", "loss", "rmse", "mae", "r2", "spearman")
NUMBER_METRICS = ("rmse", "mae", "r2", "spearman", "loss")  # what a numeric label (data.label_type number) scores on val; rmse selects by default
LOWER_IS_BETTER = ("loss", "rmse", "mae")  # every other val metric: higher is better
SEARCHABLE_SECTIONS = ("train", "preprocess")


# search.storage: a SQLite file (not :memory:, which no other process sees), a server database, or an Optuna journal file
STORAGE_FORMS = re.compile(r"sqlite:///(?!:memory:).+|(postgresql|mysql)(\+\w+)?://.+|journal:.+")


SECRET_QUERY_KEYS = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)  # query parameters that hold a credential


def _split_credentials(url: str) -> tuple[str, str, str, str]:
    """(scheme://, user, password or None, the rest: host, path, query). A password may hold `/` and `@` (unencoded,
    as people type them): the credentials end at the LAST `@` before the query, not at urllib's first `/`."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "", "", None, url
    head = rest.split("?", 1)[0]
    if "@" not in head:
        return scheme + separator, "", None, rest
    at = head.rindex("@")
    user, colon, password = rest[:at].partition(":")
    return scheme + separator, user, password if colon else None, rest[at + 1:]


def url_secrets(url: str) -> list[str]:
    """Where a URL holds a credential: its password (user:PASSWORD@), query parameters such as ?password= or &sslkey=."""
    from urllib.parse import parse_qsl

    _, _, password, rest = _split_credentials(url)
    query = rest.partition("?")[2]
    found = ["the password after user:"] if password is not None else []
    return found + [f"the query parameter {key}" for key, _ in parse_qsl(query, keep_blank_values=True) if SECRET_QUERY_KEYS.search(key)]


def masked_url(url: str) -> str:
    """The URL with every credential hidden (url_secrets), for anything printed or written: logs, errors, the report."""
    from urllib.parse import parse_qsl, urlencode

    scheme, user, password, rest = _split_credentials(url)
    where, question, query = rest.partition("?")
    if question:
        query = urlencode([(key, "***" if SECRET_QUERY_KEYS.search(key) else value) for key, value in parse_qsl(query, keep_blank_values=True)],
                          safe="*/")
    credentials = f"{user}:***@" if password is not None else (f"{user}@" if user else "")
    return f"{scheme}{credentials}{where}{question}{query}"


class Search(Section):
    method: Literal["grid", "random", "bayesian"] = "bayesian"  # bayesian = Optuna's TPE
    trials: int = Field(12, ge=1, le=100_000)  # random and bayesian; grid runs every combination once
    metric: str = "f1_macro"  # on VALIDATION: f1_macro | accuracy | loss (numbers: rmse | mae | r2 | spearman; a val_ prefix is accepted)
    seed: int = 0  # the sampler's seed: the same study proposes the same values
    concurrency: int = Field(1, ge=1, le=1024)  # trials at once (`python -m flows.search`); each gets cores // concurrency threads
    pruner: Pruner = Pruner()
    study: str = Field("search", pattern=r"^[A-Za-z0-9_-]+$", max_length=100)  # stored in .cache/search/STUDY.db: rerun to resume
    # null = .cache/search/STUDY.db; or an Optuna storage that `python -m flows.search --worker` processes share (STORAGE_FORMS),
    # never with its password: params.yaml is tracked by git and shown in the report (storage_password_env)
    storage: str | None = None
    # the environment variable holding the database's password (e.g. FINETUNE_SEARCH_PASSWORD); put into the URL when
    # the storage is opened, never written anywhere
    storage_password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    space: dict[str, Dimension] = {"train.learning_rate": Dimension(log_uniform=(1e-5, 2e-4))}

    @model_validator(mode="after")
    def _validation_metric(self):
        if self.metric.lower().startswith("test"):
            raise ValueError(f"metric {self.metric!r} is computed on test; a search selects on validation only "
                             f"({', '.join(SEARCH_METRICS)}), the test split stays for the final, honest score")
        if self.val_metric.rpartition(".")[2] not in SEARCH_METRICS:  # <task>.f1_macro: checked against the tasks by Params
            raise ValueError(f"metric {self.metric!r} is not a validation metric; expected one of {SEARCH_METRICS}")
        return self

    @model_validator(mode="after")
    def _storage_form(self):
        # a model validator, not a field one: a field error would echo the value, password included
        if self.storage is not None and not STORAGE_FORMS.fullmatch(self.storage):
            raise ValueError(f"search.storage {masked_url(self.storage)[:ECHO_LIMIT]!r} is not a storage this project opens; expected null "
                             "(.cache/search/STUDY.db), sqlite:///PATH.db, postgresql://USER@HOST/DB, mysql://USER@HOST/DB "
                             "(optionally +driver, e.g. mysql+pymysql://) or journal:PATH (an Optuna journal file, fit for NFS-like shared folders)")
        if self.storage is not None and (secrets := url_secrets(self.storage)):
            raise ValueError(f"search.storage {masked_url(self.storage)[:ECHO_LIMIT]!r} holds {' and '.join(secrets)}: params.yaml is tracked by "
                             "git and shown in the report; put the password in an environment variable and name it in "
                             "search.storage_password_env (or use the driver's own: PGPASSWORD / ~/.pgpass, ~/.my.cnf)")
        return self

    @model_validator(mode="after")
    def _grid_is_discrete(self):
        if not self.space:
            raise ValueError("space is empty: name at least one train.* or preprocess.* key to search")
        if self.method == "grid":
            continuous = [key for key, axis in self.space.items() if axis.grid_values() is None]
            if continuous:
                raise ValueError(f"grid search needs choice or integer axes; {continuous} are continuous (list values with choice)")
        return self

    @property
    def val_metric(self) -> str:
        return self.metric.lower().removeprefix("val_").removeprefix("val.")

    @property
    def direction(self) -> str:
        return "minimize" if self.val_metric.rpartition(".")[2] in LOWER_IS_BETTER else "maximize"


PRIMARY = "primary"  # the train stage's own model, member of the ensemble when include_primary is true
MEMBER_NAME = re.compile(r"[A-Za-z0-9_-]+")  # names become stage names (member@NAME) and folders


class Ensemble(Section):
    # auto: the simplest method within one standard error of the best cross-fitted val macro F1 (finetune/families/classification/combining.py)
    method: Literal["auto", "best_member", "hard_vote", "soft_vote", "weighted", "stacking"] = "auto"
    folds: int = Field(5, ge=2)  # cross-fitting folds of val: how every method is scored for `auto`
    prior_rows: float = Field(100.0, ge=0)  # fitted weights shrink toward equal ones as if this many more val rows preferred them
    calibration: Literal["temperature", "none"] = "temperature"  # per member, fitted on val
    include_primary: bool = True  # the train stage's model is member "primary"
    weights: dict[str, float] | None = None  # fixed weights for `weighted`; null = fitted on val
    members: dict[str, Member] = {}

    def names(self) -> list[str]:
        return ([PRIMARY] if self.include_primary else []) + list(self.members)

    @model_validator(mode="after")
    def _members_and_weights(self):
        for name in self.members:
            if name == PRIMARY or not MEMBER_NAME.fullmatch(name):
                raise ValueError(f"member name {_short(name)} must match [A-Za-z0-9_-]+ and not be {PRIMARY!r}")
        names = self.names()
        if len(names) < 2:
            raise ValueError(f"method {self.method!r} combines at least 2 members, got {names}")
        if self.weights is not None:
            unknown = sorted(set(self.weights) - set(names))
            if unknown:
                raise ValueError(f"weights name unknown member(s) {unknown}; members are {names}")
            negative = {name: w for name, w in self.weights.items() if w < 0}
            if negative:
                raise ValueError(f"weights must be >= 0, got {negative}")
            if sum(self.weights.values()) <= 0:
                raise ValueError(f"weights {self.weights} do not sum to a positive number")
        return self


def _short(value) -> str:
    """repr(value) cut to ECHO_LIMIT characters: an error never echoes a huge value back."""
    text = repr(value)
    return text if len(text) <= ECHO_LIMIT else f"{text[:ECHO_LIMIT]}... ({len(text)} characters)"
