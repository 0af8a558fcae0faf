"""Small helpers to build the self-contained HTML report: every image is embedded as base64,
no script, no stylesheet or font from the network."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #e3e3e3;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:1em;flex-wrap:wrap} .card{border:1px solid #ddd;border-radius:8px;padding:.8em 1.2em;min-width:10em}
.card b{font-size:1.6em;display:block} .good{color:#17803d} .bad{color:#b42318} .muted{color:#777;font-size:.9em}
pre{background:#f7f7f7;padding:1em;overflow:auto} img{max-width:100%}
"""


def esc(value) -> str:
    return html.escape(str(value))


def number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return esc(value)


def table(frame: pd.DataFrame, html_columns: tuple[str, ...] = ()) -> str:
    """An HTML table; values are escaped, except in `html_columns` (already HTML: a rendered example)."""
    def cell(column, value) -> str:
        if column in html_columns:
            return f"<td>{value}</td>"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return f'<td class="num">{number(value)}</td>'
        return f"<td>{esc(value)}</td>"

    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(cell(c, v) for c, v in zip(frame.columns, row)) + "</tr>" for row in frame.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def adaptive_timeline(parameters: dict) -> str:
    """train.strategy adaptive's timeline (train.json parameters.adaptive): per evaluation (and per gradient-norm check of
    freeze_converged's check_every, which has no val metric), the trainable layer groups and why they changed; empty for
    the other strategies."""
    adaptive = parameters.get("adaptive")
    if not adaptive:
        return ""
    rows = pd.DataFrame([{**row, "trainable": ", ".join(row["trainable"]), "change": row["change"] or "-"} for row in adaptive["timeline"]]).fillna("-")
    return f"<h3>Adaptive ({esc(adaptive['policy'])}): trainable layer groups over training</h3>" + table(rows)


def _brief(value) -> str:
    """One cell of the data profile: quantiles as "p50 32 · p95 50 · max 65", a share as a percentage, counts as "L: 5"."""
    if isinstance(value, dict) and "p50" in value:
        return " · ".join(f"{name} {value[name]:g}" for name in ("min", "p50", "p95", "max"))
    if isinstance(value, dict):
        return ", ".join(f"{key}: {count:,}" for key, count in value.items())
    if isinstance(value, float) and 0 <= value <= 1:
        return f"{100 * value:.1f} %" if value >= 0.01 or value == 0 else f"{100 * value:.2g} %"
    return f"{value:,}" if isinstance(value, int) else str(value)


def data_profile(profile: dict, lead: str, chosen_later: list[dict], examples: str) -> str:
    """The data profile (reports/preprocess.json `profile`, finetune/data/profile.py): the suggestions first, then what the
    family says of it (`lead`: classes, documents), the inputs' facts per split, near duplicates with `examples` (HTML), and
    every setting chosen from the data with why (`chosen_later`: the later stages' choices, e.g. the training schedule)."""
    notes = "".join(f"<li>{esc(note)}</li>" for note in profile["notes"])
    parts = [f'<h3>Suggested</h3><ul class="bad">{notes}</ul>' if notes else "<p>Nothing to suggest: none of the checks below found a problem.</p>", lead]
    facts = [{"": name.replace("_", " "), **{split: _brief(v) for split, v in per_split.items()}} for name, per_split in profile.get("inputs", {}).items()]
    if facts:
        parts.append("<h3>Inputs, per split</h3>" + table(pd.DataFrame(facts).fillna("")))
    near = profile.get("near_duplicates")
    if near:
        counts = [f"{near['train_rows_with_a_twin']:,} of {near['compared']['train']:,} train rows have a near twin in train"] + [
            f"{near[f'{name}_rows_near_train']:,} of {near['compared'][name]:,} {name} rows nearly repeat a train row"
            for name in ("val", "test") if f"{name}_rows_near_train" in near]
        parts.append(f"<h3>Near duplicates</h3><p>{esc('; '.join(counts))} (cosine similarity at least {near['threshold']} of "
                     f"{esc(near['method'])}; exact duplicates were dropped before the split).</p>{examples}")
    chosen = [*profile["chosen"], *chosen_later]
    if chosen:
        parts.append("<h3>Chosen from the data, or set</h3>" + table(pd.DataFrame(chosen).astype(str)))
    return "".join(parts)


def training_choices(train: dict) -> list[dict]:
    """What the train stage chose from the data (train.json), for the profile's "chosen" table: the epochs (the schedule)
    and the rows per forward pass (the memory budget: finetune/training/memory.py)."""
    chosen = [{"setting": "train.epochs", "value": train["schedule"]["epochs"], "why": train["schedule"]["why"]}] if "schedule" in train else []
    if "memory" in train:
        chosen.append({"setting": "train.memory_budget_gib", "value": f"{train['memory']['rows_per_forward']} rows per forward pass",
                       "why": train["memory"]["why"]})
    return chosen


def png_bytes_img(data: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def png_file_img(path: Path, alt: str) -> str:
    return png_bytes_img(Path(path).read_bytes(), alt)


def figure_img(figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return png_bytes_img(buffer.getvalue(), alt)


def page(title: str, sections: list[tuple[str, str]]) -> str:
    nav = " · ".join(f'<a href="#s{i}">{esc(name)}</a>' for i, (name, _) in enumerate(sections))
    body = "".join(f'<h2 id="s{i}">{esc(name)}</h2>{content}' for i, (name, content) in enumerate(sections))
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1><p>{nav}</p>{body}</body></html>\n"
    )


def shaded(text: str, score: float, scale: float) -> str:
    """text on a background shaded by score: green for, red against, opacity |score| / scale (the exact score is the hover title)."""
    colour = "22,140,60" if score >= 0 else "200,40,40"
    return f'<span title="{score:+.4f}" style="background:rgba({colour},{0.85 * abs(score) / scale:.2f})">{esc(text)}</span>'
