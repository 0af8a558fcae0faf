"""The one typed schema for params.yaml. Sections are named after the stages that read them.

One mechanism for what a task adds: the shared sections below hold the keys every task has (SECTIONS); a task's
`sections` (finetune/families/task.py: its family's, updated by its folder's own) give, per section, a subclass of the
shared one with its own keys and defaults (text: data.text_column, the whole preprocess section, explain's token
methods; causal LM: evaluate's prompts...). `params_class(task)` composes them into the complete schema of one task.

Every stage validates the WHOLE file before doing any work, so a typo anywhere fails fast with
the key's dotted name, what was expected, and (for unknown keys) the closest valid spelling.
"""
from __future__ import annotations

import difflib
import functools
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, create_model, model_validator

from finetune.config.sections import (
    ECHO_LIMIT,
    NUMBER_METRICS,
    PRIMARY,
    SEARCHABLE_SECTIONS,
    Compress,
    Data,
    EarlyStopping,
    Ensemble,
    Evaluate,
    Explain,
    Preprocess,
    Report,
    Search,
    Section,
    Train,
    _short,
    label_columns,
)
from finetune.errors import UserError

DEFAULT_TASK = "text-classification"


class Params(Section):
    """The shared schema; `params_class(task)` narrows each section to the task's own (SECTIONS)."""
    task: str = DEFAULT_TASK
    data: Data
    preprocess: Preprocess
    train: Train
    evaluate: Evaluate = Evaluate()
    ensemble: Ensemble
    compress: Compress = Compress()
    explain: Explain = Explain()
    search: Search = Search()
    report: Report = Report()

    @model_validator(mode="before")
    @classmethod
    def _number_defaults(cls, raw):
        """A numeric label (data.label_type number) trains with mse and selects on val rmse unless params say otherwise:
        the task's defaults (cross_entropy, f1_macro) are for classes."""
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict) or raw["data"].get("label_type") != "number":
            return raw
        train = dict(raw.get("train") or {})
        train.setdefault("loss", "mse")
        train["early_stopping"] = {"metric": "rmse", **(train.get("early_stopping") or {})}
        return {**raw, "train": train, "search": {"metric": "rmse", **(raw.get("search") or {})}}

    @model_validator(mode="after")
    def _losses_fit_the_labels(self):
        number, loss = self.data.label_type == "number", self.train.loss
        if number and loss not in ("mse", "huber", "mae"):
            raise ValueError(f"train.loss {loss}: data.label_type number trains with a regression loss: mse, huber or mae")
        if not number and loss in ("mse", "huber", "mae"):
            raise ValueError(f"train.loss {loss} is for numeric labels: set data.label_type number, or use cross_entropy")
        if number and (self.train.class_weights is not None or self.train.balance != "none" or self.train.label_smoothing):
            raise ValueError("train.class_weights, train.balance and train.label_smoothing are for classes; with data.label_type "
                             "number leave them at null, none and 0")
        return self

    @model_validator(mode="after")
    def _member_overrides_are_valid(self):
        for name in self.ensemble.members:
            self.for_member(name)
        return self

    @model_validator(mode="after")
    def _metrics_the_task_scores(self):
        from finetune.tasks import get_task

        scored = get_task(self.task).val_metrics
        if self.data.label_type == "number":
            if "f1_macro" not in scored:
                raise ValueError(f"data.label_type number: the {self.task} task has no labels to predict")
            scored = NUMBER_METRICS
        heads = list(label_columns(self.data))
        if heads and "f1_macro" not in scored:
            raise ValueError(f"data.label_columns: the {self.task} task has no labels to predict")
        per_head = [f"{head}.{metric}" for head in heads if head not in self.data.number_heads for metric in scored if metric != "loss"]
        per_head += [f"{head}.{metric}" for head in self.data.number_heads for metric in NUMBER_METRICS if metric != "loss"]
        for key, metric in (("train.early_stopping.metric", self.train.early_stopping.metric), ("search.metric", self.search.val_metric)):
            if metric not in (*scored, *per_head):
                one = f" or one head's ({', '.join(per_head)})" if per_head else ""
                raise ValueError(f"{key} {metric!r}: the {self.task} task scores {list(scored)} on val{one}")
        weights = self.train.head_weights
        if weights is not None and not heads:
            raise ValueError(f"train.head_weights {_short(weights)}: weights of several heads' losses need data.label_columns")
        unknown = sorted(set(weights) - set(heads)) if isinstance(weights, dict) else []
        if unknown:
            raise ValueError(f"train.head_weights: {unknown} not among the heads of data.label_columns ({heads})")
        return self

    @model_validator(mode="after")
    def _teacher_is_a_finetuned_model(self):
        teacher, finetuned = self.compress.teacher, self.finetuned_models()
        if teacher != "best" and teacher not in finetuned:
            raise ValueError(f"compress.teacher {_short(teacher)} is not a fine-tuned model; expected 'best' or one of {finetuned}")
        return self

    @model_validator(mode="after")
    def _search_space_keys_exist(self, info: ValidationInfo):
        if info.context and info.context.get("probing"):  # validating one trial's values: the space was checked already
            return self
        for key, axis in self.search.space.items():
            section, *path = key.split(".")
            if section not in SEARCHABLE_SECTIONS or not path:
                raise ValueError(f"search.space.{key}: a search varies train.* or preprocess.* keys, e.g. train.learning_rate")
            model = type(getattr(self, section))
            for depth, part in enumerate(path):
                fields = _fields(model)
                if part not in fields:
                    guess = difflib.get_close_matches(part, list(fields), n=1)
                    hint = f"; did you mean {'.'.join([section, *path[:depth], guess[0]])!r}?" if guess else ""
                    raise ValueError(f"search.space.{key}: unknown param key{hint}")
                model = fields[part].annotation
            for value in axis.probe_values():
                try:
                    self.with_values({key: value})
                except ValidationError as error:
                    raise ValueError(f"search.space.{key}: value {_short(value)} is invalid: {_problems(error)}") from None
        return self

    def with_values(self, values: dict[str, Any]) -> "Params":
        """These params with dotted keys (`train.learning_rate`) set, validated."""
        raw = self.model_dump()
        for key, value in values.items():
            *parents, last = key.split(".")
            node = raw
            for part in parents:
                node = node[part]
            node[last] = value
        return type(self).model_validate(raw, context={"probing": True, "task": self.task})

    def finetuned_models(self) -> list[str]:
        """The train stage's model and every finetune member: the models compress can start from."""
        return [PRIMARY] + [name for name, member in self.ensemble.members.items() if member.kind == "finetune"]

    def for_member(self, name: str) -> "Params":
        """These params with member `name`'s overrides applied to train and preprocess."""
        member = self.ensemble.members[name]
        merged = {}
        for section in ("train", "preprocess"):
            overrides = getattr(member, section)
            base = getattr(self, section).model_dump()
            for key in set(overrides) & set(getattr(type(getattr(self, section)), "ONCE_FOR_ALL_MEMBERS", ())):
                raise ValueError(f"ensemble.members.{name}.{section}.{key}: {section}.{key} applies once, in the preprocess stage, to "
                                 f"the rows every member shares; set {section}.{key} itself")
            try:
                merged[section] = type(getattr(self, section)).model_validate(_deep_merge(base, overrides), context={"task": self.task})
            except ValidationError as error:
                raise ValueError(f"ensemble.members.{name}.{section} overrides are invalid: {_problems(error)}") from None
        return self.model_copy(update=merged)


SECTIONS = {"data": Data, "preprocess": Preprocess, "train": Train, "evaluate": Evaluate, "ensemble": Ensemble, "compress": Compress,
            "explain": Explain, "search": Search, "report": Report}
# keys that were renamed: the old spelling is refused with the new one (never silently aliased)
RENAMED = {"train.task_weights": "train.head_weights"}


@functools.cache
def params_class(task_name: str) -> type[Params]:
    """The complete schema of one task: each section the task's own (task.sections) or the shared one."""
    from finetune.tasks import get_task

    task = get_task(task_name)
    sections = {name: task.sections.get(name, shared) for name, shared in SECTIONS.items()}
    wrong = {name: section.__name__ for name, section in sections.items() if not issubclass(section, SECTIONS[name])}
    if wrong or set(task.sections) - set(SECTIONS):
        raise TypeError(f"task {task_name}: sections {wrong or sorted(set(task.sections) - set(SECTIONS))} must extend the shared "
                        f"sections of finetune/config/params.py SECTIONS")
    # the val metric training and search select on by default: the task's first (a generative model has only loss)
    selects_on = task.val_metrics[0]
    # a task without builtin data or models has no default for them: params.yaml must name them
    builtin, data = task.models.builtin, sections["data"]
    stopping = sections["train"].model_fields["early_stopping"].default.model_copy(update={"metric": selects_on})
    train = create_model(f"Train[{task_name}]", __base__=sections["train"], early_stopping=(EarlyStopping, stopping),
                         **({"model": (str, builtin[0])} if builtin else {}))
    search = create_model(f"Search[{task_name}]", __base__=sections["search"], metric=(str, selects_on))
    return create_model(
        f"Params[{task_name}]", __base__=Params,
        task=(Literal[task_name], task_name),
        data=(data, Field(default_factory=lambda: data(source=data.BUILTINS[0])) if data.BUILTINS else ...),
        train=(train, Field(default_factory=train) if builtin else ...),
        search=(search, search()),
        **{name: (section, section()) for name, section in sections.items() if name not in ("data", "train", "search")},
    )


def _deep_merge(base: dict, overrides: dict) -> dict:
    """base with overrides applied key by key, nested sections too ({augment: {seed: 7}} keeps augment's other keys)."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def _fields(model) -> dict:
    """The fields of a pydantic model class, looking through Optional[...] and dict[str, Model]."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_fields
    for argument in typing.get_args(model):
        fields = _fields(argument)
        if fields:
            return fields
    return {}


def _problems(error: ValidationError) -> str:
    """One line: each failing key and why (for errors raised inside a validator)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {_short_message(e['msg'])}" for e in error.errors())


def _short_message(message: str) -> str:
    return message if len(message) <= 4 * ECHO_LIMIT else f"{message[:4 * ECHO_LIMIT]}..."


def _explain(error: ValidationError, schema: type[Params]) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            model = schema
            for part in item["loc"][:-1]:
                model = _fields(model)[part].annotation if part in _fields(model) else dict
            fields = _fields(model)
            guess = difflib.get_close_matches(str(item["loc"][-1]), list(fields), n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else f"; valid keys: {', '.join(fields)}"
            lines.append(f"{key}: unknown key{hint}")
        else:
            got = f" (got {_short(item['input'])})" if "input" in item and not isinstance(item["input"], dict) else ""
            lines.append(f"{key or '<top level>'}: {_short_message(item['msg'])}{got}")
    return "\n  ".join(lines)


def _renamed(raw: dict) -> list[str]:
    """A line per old key spelling (RENAMED) in raw: at its place, in a member's overrides or as a search axis."""
    def has(node, dotted: str) -> bool:
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True
    def section(node, *keys):
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}
    members, space = section(raw, "ensemble", "members"), section(raw, "search", "space")
    found = []
    for old, new in RENAMED.items():
        places = [old] if has(raw, old) else []
        places += [f"ensemble.members.{name}.{old}" for name, member in members.items() if isinstance(member, dict) and has(member, old)]
        places += [f"search.space.{old}"] if old in space else []
        found += [f"{place}: renamed to {new} (write {place.replace(old, new)})" for place in places]
    return found


def parse_params(raw: dict, origin: str = "params.yaml") -> Params:
    from finetune.tasks import task_names

    task = raw.get("task", DEFAULT_TASK)
    if task not in task_names():
        raise UserError(f"{origin} is invalid:\n  task: unknown task {_short(task)}; expected one of {task_names()} "
                        "(a task is a folder finetune/tasks/<task>/)")
    if renamed := _renamed(raw):
        raise UserError(f"{origin} is invalid:\n  " + "\n  ".join(renamed))
    schema = params_class(task)
    try:
        return schema.model_validate(raw, context={"task": task})
    except ValidationError as error:
        raise UserError(f"{origin} is invalid:\n  {_explain(error, schema)}") from None


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors' aliases: a params file never needs them, and nested aliases (a 'billion
    laughs' document) expand a few hundred bytes into gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"line {mark.line + 1}: YAML aliases (*name) are not supported in params files; write the values out")
        return super().compose_node(parent, index)


def read_yaml(path: Path) -> dict:
    """params.yaml as a dict: UTF-8, no aliases, a mapping at the top; anything else is a UserError."""
    if not path.is_file():
        raise UserError(f"{path} not found (run from the project root, where dvc.yaml is)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_NoAliasLoader) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {_short_message(str(error))}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(path: Path | str = "params.yaml") -> Params:
    path = Path(path)
    return parse_params(read_yaml(path), str(path))


def trained_params(record: dict, model: str, origin: str) -> Params:
    """The params a trained model's pipeline.json (`record`) holds, as predicting with it needs them: preprocess validated
    by the task's schema (featurize reads all of it); data and train as recorded, unvalidated (data.source may be gone on
    the machine that predicts; only the input columns and image limits are read), with train.model replaced by `model`,
    the trained folder whose processor featurize reads."""
    from finetune.tasks import task_names

    task = record.get("task") if isinstance(record, dict) else None
    saved = record.get("params") if isinstance(record, dict) else None
    if task not in task_names() or not isinstance(saved, dict) or not all(isinstance(saved.get(s), dict) for s in ("data", "preprocess", "train")):
        raise UserError(f"{origin} is not a trained model's record (expected the task, one of {task_names()}, and its params)")
    schema = params_class(task)
    section = {name: field.annotation for name, field in schema.model_fields.items()}
    try:
        preprocess = section["preprocess"].model_validate(saved["preprocess"])
    except ValidationError as error:
        raise UserError(f"{origin}: its preprocess settings do not fit this version's schema:\n  {_problems(error)}") from None
    return schema.model_construct(task=task, data=section["data"].model_construct(**saved["data"]), preprocess=preprocess,
                                  train=section["train"].model_construct(**{**saved["train"], "model": model}))
