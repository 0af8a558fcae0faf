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


def highlighted_tokens(tokens: list[str], scores: list[float], special: list[bool]) -> str:
    """Tokens as text, each shaded by its score: green supports the prediction, red opposes it,
    opacity relative to the largest |score| of this example (the exact score is the hover title).
    Word pieces ("##ing", SentencePiece's "▁") are joined back into words."""
    scale = max((abs(s) for s, sp in zip(scores, special) if not sp), default=0) or 1.0
    parts = []
    for token, score, is_special in zip(tokens, scores, special):
        if is_special:
            continue
        glue = token.startswith("##")
        text = token.removeprefix("##").replace("▁", " ").replace("Ġ", " ")
        colour = "22,140,60" if score >= 0 else "200,40,40"
        parts.append(("" if glue or not parts else " ")
                     + f'<span title="{score:+.4f}" style="background:rgba({colour},{0.85 * abs(score) / scale:.2f})">{esc(text.strip())}</span>')
    return "".join(parts)


def token_explanations(result: dict, saved: dict, params) -> str:
    """The report's view of the "tokens" explainer: each example's tokens shaded by each method, the
    global tokens per class, and the compressed models' drift (after the generic faithfulness table)."""
    global_rows = [{"predicted": label, "tokens (mean IG)": ", ".join(f"{t['token']} ({t['mean_attribution']:+.3f})" for t in tokens)}
                   for label, tokens in saved["global"].items()]
    methods = [m for m in ("integrated_gradients", "gradient_x_input", "attention") if m in result["methods"]]
    cards = []
    for e in saved["examples"]:
        rows = "".join(f"<tr><td>{esc(m.replace('_', ' '))}</td><td>{highlighted_tokens(e['tokens'], e[m], e['special'])}"
                       f"{' <b>[… truncated at max_length]</b>' if e['truncated'] else ''}</td></tr>" for m in methods)
        tone = "good" if e["actual"] == e["predicted"] else "bad"
        cards.append(f'<p><b class="{tone}">{esc(e["predicted"])}</b> (p = {e["probability"]:.3f}; true: {esc(e["actual"])}; '
                     f'{esc(e["why_chosen"])}; IG delta {e["convergence_delta"]:+.4f})</p><table>{rows}</table>')
    drift = result["compressed_vs_teacher"]
    drift_rows = [{"model": m, "mean Spearman ρ of IG vs the teacher": v["mean_spearman"] if isinstance(v, dict) else esc(v)}
                  for m, v in drift.items() if m != "teacher"]
    drift_html = (f"<h3>Do the compressed models decide for the same reasons as their teacher ({esc(drift['teacher'])})?</h3>"
                  f"{table(pd.DataFrame(drift_rows))}<p class=\"muted\">Rank correlation of the IG scores of the same tokens for the "
                  "teacher's predicted class, per example, averaged. 1 = same ranking; low values flag a model that now relies on other tokens.</p>"
                  if "teacher" in drift else "")
    return (
        f"<p>Scores are contributions to the probability of the <i>predicted</i> class: green for, red against (hover for the value). "
        f"Integrated Gradients: {result['ig_steps']} steps from an all-[PAD] baseline, mean |convergence delta| "
        f"{result['convergence_delta']['mean_abs']:.4f}. Attention: what [CLS] attends to in layer {params.explain.attention_layer}, "
        "averaged over heads (attention weights are not explanations; shown for comparison). Faithfulness deletes tokens ([MASK]).</p>"
        f"<h3>Tokens with the largest mean attribution, per predicted class</h3>{table(pd.DataFrame(global_rows))}{drift_html}"
        f"<h3>Examples</h3>{''.join(cards)}"
    )


EXPLANATION_VIEWS = {"tokens": token_explanations}  # one per explainer name in finetune/attribution.py
