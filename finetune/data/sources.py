"""Where rows come from: the standard column names, the user's table read with the configured columns, folders of
one file per example (images, audio clips: one sub-folder per class), and the folders of the pip packages that carry
builtin data and weights (read, never imported)."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from finetune.config.sections import Data, label_columns
from finetune.data.files import read_input_file
from finetune.data.heads import encode
from finetune.data.tables import LINE, ROW, BadRow, read_table
from finetune.errors import UserError

INPUT, LABEL, CONFIDENCE, SPLIT, ORIGIN = "input", "label", "confidence", "split", "origin"


@dataclass
class Source:
    """What a task read from data.source: rows with the standard columns, the rows it could not read,
    a description of where they came from, and what it skipped on purpose (e.g. hidden files), counted."""
    frame: pd.DataFrame
    bad: list[BadRow]
    origin: str
    ignored: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # {head or "label": what its values were}; {} = texts (labels.py)


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {package!r} is not installed; run `make setup` (it installs the offline data/model packages)")
    return Path(spec.submodule_search_locations[0])


def read_user_table(data: Data, input_column: str, input_key: str, also: dict[str, str] | None = None, labelled: bool = True) -> Source:
    """data.source's rows with the standard columns: input (the column data.<input_key> names), label (with
    data.label_columns: every head's label in one JSON object, finetune/data/heads.py), confidence and split when configured,
    source_row, source_line, origin ("row N"); and the columns `also` names ({param key: column}, e.g. a second input)
    under their own names. Not `labelled` (new rows to predict): the inputs only, whatever label columns data names."""
    heads = label_columns(data) if labelled else {}
    labels = {f"label_columns.{head}": column for head, column in heads.items()} or ({"label_column": data.label_column} if labelled else {})
    columns = {input_key: input_column, **(also or {}), **labels}
    renames = {input_column: INPUT} | ({} if heads or not labelled else {data.label_column: LABEL})
    for key, standard in (("confidence_column", CONFIDENCE), ("split_column", SPLIT)):
        if labelled and getattr(data, key):
            columns[key] = getattr(data, key)
            renames[getattr(data, key)] = standard
    label_of = heads or ({LABEL: data.label_column} if labelled else {})  # {head: its column}
    frame, bad, kinds = read_table(Path(data.source), columns, labels=tuple(label_of.values()))
    kinds = {head: kinds[column] for head, column in label_of.items()}
    if heads:  # the label columns become one JSON label (a head's column may itself be called "label")
        labels = encode(frame, heads)
        frame = frame.drop(columns=[c for c in heads.values() if c not in (input_column, *(also or {}).values())]).assign(**{LABEL: labels})
    frame = frame.rename(columns=renames)
    frame[ORIGIN] = "row " + frame[ROW].astype(str)
    return Source(frame, bad, data.source, kinds=kinds)


def chosen_labels(frame: pd.DataFrame, data: Data, origin: str) -> pd.DataFrame:
    """A builtin with several label columns: `label` from the one data.label_column names, or (data.label_columns) all
    of the named ones as one JSON label (finetune/data/heads.py); the label columns themselves are dropped."""
    available = [c for c in frame.columns if c not in (INPUT, SPLIT, ORIGIN, ROW, LINE)]
    heads = label_columns(data) or {LABEL: data.label_column}
    missing = sorted(set(heads.values()) - set(available))
    if missing:
        raise UserError(f"{origin} has no label column(s) {missing}; its label columns are {available}: name one in data.label_column "
                        "or several in data.label_columns")
    labels = encode(frame, heads) if label_columns(data) else frame[data.label_column]
    return frame.drop(columns=available).assign(**{LABEL: labels})


def numbered(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Rows of a builtin source that has no lines: row and line numbers 1..N, origin "<origin> #N"."""
    numbers = range(1, len(frame) + 1)
    return frame.assign(**{ROW: numbers, LINE: numbers, ORIGIN: [f"{origin} #{n}" for n in numbers]})


# -- one file per example (images, audio clips) ---------------------------------------------------------
def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(root).parts)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def class_folder(root: Path, suffixes: set[str], kind: str) -> Source:
    """One sub-folder per class; files are rows (input: the path, relative to the project), labels are folder names; a
    file without one of `suffixes` is a bad row ("not an {kind} file"); hidden files and folders are ignored and counted."""
    rows, bad, ignored = [], [], {"hidden files or folders": 0, "files outside class folders": 0}
    for path in _files(root):
        relative = path.relative_to(root)
        if _hidden(path, root):
            ignored["hidden files or folders"] += 1
        elif len(relative.parts) < 2:
            ignored["files outside class folders"] += 1
        else:
            number = len(rows) + len(bad) + 1
            if path.suffix.lower() not in suffixes:
                bad.append(BadRow(number, number, f"not {kind} file ({path.suffix or 'no extension'})", str(path)))
            else:
                rows.append({INPUT: str(path), LABEL: relative.parts[0], ROW: number, LINE: number, ORIGIN: str(path)})
    if not rows and not bad:
        raise UserError(f"{root}: no class folders with {kind.split()[-1]} files found (expected {root}/<class>/<file>)")
    return Source(pd.DataFrame(rows, columns=[INPUT, LABEL, ROW, LINE, ORIGIN]), bad, str(root),
                  {reason: n for reason, n in ignored.items() if n})


def files_table(data: Data, column: str, key: str) -> Source:
    """A table whose `column` (data.<key>) holds file paths relative to the table's folder: the rows, each input the path
    made relative to the project (an empty cell: "")."""
    source = read_user_table(data, column, key)
    folder = Path(data.source).parent
    frame = source.frame
    frame[ORIGIN] = frame[INPUT]
    frame[INPUT] = [str(folder / path) if path else "" for path in frame[INPUT].fillna("")]
    return source


def _loaded(frame: pd.DataFrame, bad: list[BadRow], root: Path, kind: str) -> pd.DataFrame:
    """Rows whose input (a path relative to root) becomes the bytes of that file, read confined to root; a file that
    cannot be read moves to `bad` with the reason."""
    kept = []
    for index, value in frame[INPUT].items():
        try:
            if not value:
                raise ValueError(f"no {kind} path")
            frame.at[index, INPUT] = read_input_file(root / value if not Path(value).is_absolute() else value, root)
            kept.append(index)
        except ValueError as error:
            bad.append(BadRow(frame.at[index, ROW], frame.at[index, LINE], str(error), str(frame.at[index, ORIGIN])))
    return frame.loc[kept]


def files_to_predict(path: Path, data: Data, column: str, key: str, suffixes: set[str], kind: str) -> Source:
    """New examples to predict (`finetune predict --input`): every file with one of `suffixes` under a folder (any
    depth; hidden ones ignored and counted), or a table's `column` (data.<key>) of paths relative to the table's
    folder. Each file is read here, confined to that folder; input: its bytes."""
    if path.is_dir():
        rows, bad, hidden = [], [], 0
        for file in _files(path):
            if _hidden(file, path):
                hidden += 1
                continue
            number = len(rows) + len(bad) + 1
            if file.suffix.lower() not in suffixes:
                bad.append(BadRow(number, number, f"not {kind} file ({file.suffix or 'no extension'})", str(file)))
            else:
                rows.append({INPUT: str(file.relative_to(path)), ROW: number, LINE: number, ORIGIN: str(file)})
        frame = pd.DataFrame(rows, columns=[INPUT, ROW, LINE, ORIGIN]).astype({INPUT: object})
        return Source(_loaded(frame, bad, path, kind.split()[-1]), bad, str(path), {"hidden files or folders": hidden} if hidden else {})
    source = read_user_table(data.model_copy(update={"source": str(path)}), column, key, labelled=False)
    frame = source.frame.astype({INPUT: object})
    frame[ORIGIN] = frame[INPUT].fillna("")
    frame[INPUT] = frame[ORIGIN]
    source.frame = _loaded(frame, source.bad, path.parent, kind.split()[-1])
    return source
