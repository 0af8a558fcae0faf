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


def shaded(text: str, score: float, scale: float) -> str:
    """text on a background shaded by score: green for, red against, opacity |score| / scale (the exact score is the hover title)."""
    colour = "22,140,60" if score >= 0 else "200,40,40"
    return f'<span title="{score:+.4f}" style="background:rgba({colour},{0.85 * abs(score) / scale:.2f})">{esc(text)}</span>'


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
        parts.append(("" if glue or not parts else " ") + shaded(text.strip(), score, scale))
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


def heatmap_png(image: str, scores: list | None, size: int = 112) -> bytes:
    """PNG bytes of `image` (base64 PNG) at size x size; with scores (a map of any size), the image in grey under
    them: red for the predicted class, blue against, opacity by |score| relative to the map's 98th percentile
    (a zero shows the bare image)."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    picture = Image.open(io.BytesIO(base64.b64decode(image)))
    picture = (picture.convert("L") if scores is not None else picture).convert("RGB").resize((size, size), Image.Resampling.NEAREST)
    if scores is not None:
        values = np.asarray(scores, dtype=np.float32)
        scale = np.percentile(np.abs(values), 98) or np.abs(values).max() or 1.0  # a few extreme pixels would wash out the rest
        values = np.clip(np.asarray(Image.fromarray((values / scale).astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR)), -1, 1)
        alpha = 0.85 * np.abs(values)[..., None]
        blended = (1 - alpha) * np.asarray(picture) / 255 + alpha * colormaps["RdBu_r"]((values + 1) / 2)[..., :3]
        picture = Image.fromarray((blended * 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def class_map_png(scores: list, size: int = 96) -> bytes:
    """PNG bytes of a non-negative map (magma: black 0 to yellow at its maximum)."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    values = np.asarray(scores, dtype=np.float32)
    colours = colormaps["magma"](values / (values.max() or 1.0))[..., :3]
    buffer = io.BytesIO()
    Image.fromarray((colours * 255).round().astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()


PIXEL_METHODS = {"integrated_gradients": "integrated gradients", "gradient_x_input": "gradient × input", "occlusion": "occlusion",
                 "grad_cam": "Grad-CAM", "attention": "attention rollout"}


def pixel_explanations(result: dict, saved: dict, params) -> str:
    """The report's view of the "pixels" explainer (after the generic faithfulness table and skipped methods):
    how faithful each method's ranking of patches is, each example with every method's map laid over it,
    the mean |IG| map per predicted class, and the compressed models' drift."""
    f, methods = result["faithfulness"], [m for m in PIXEL_METHODS if m in result["methods"]]
    aopc = {m: f["aopc_top_ig"] if m == "integrated_gradients" else f[f"aopc_top_{m}"] for m in methods}
    worse = [PIXEL_METHODS[m] for m, value in aopc.items() if value <= f["aopc_random"]]
    faithful = (f"<p>Deleting the top-k of {f['patches']} patches (replaced by the {esc(result['baseline'])} baseline) lowers p(predicted) "
                f"on average over k = 1..{f['k'][-1]} by " + ", ".join(f"{value:.4f} ranked by {PIXEL_METHODS[m]}" for m, value in aopc.items())
                + f", vs {f['aopc_random']:.4f} for random patches. "
                + (f"<b>No better than random: {esc(', '.join(worse))}</b> (those maps do not rank what the model relies on).</p>" if worse
                   else "Every method beats random.</p>"))
    head = "<tr><th>example</th><th>image</th>" + "".join(f"<th>{esc(PIXEL_METHODS[m])}</th>" for m in methods) + "</tr>"
    rows = []
    for e in saved["examples"]:
        tone, number = ("good" if e["actual"] == e["predicted"] else "bad"), e["id"]
        cells = "".join(f"<td>{png_bytes_img(heatmap_png(e['image'], e['maps'][m]), f'{PIXEL_METHODS[m]}, example {number}')}</td>" for m in methods)
        rows.append(f'<tr><td><b class="{tone}">{esc(e["predicted"])}</b><br>p = {e["probability"]:.3f}<br>true: {esc(e["actual"])}<br>'
                    f'<span class="muted">{esc(e["why_chosen"])}; IG delta {e["convergence_delta"]:+.4f}</span></td>'
                    f"<td>{png_bytes_img(heatmap_png(e['image'], None), f'example {number}')}</td>{cells}</tr>")
    classes = "".join(f"<td>{png_bytes_img(class_map_png(v['map']), f'mean |IG| for {label}')}<br>{esc(label)} ({v['examples']})</td>"
                      for label, v in saved["global"].items())
    drift = result["compressed_vs_teacher"]
    drift_rows = [{"model": m, "mean Spearman ρ of IG patch scores vs the teacher": v["mean_spearman"] if isinstance(v, dict) else v}
                  for m, v in drift.items() if m != "teacher"]
    drift_html = (f"<h3>Do the compressed models look at the same patches as their teacher ({esc(drift['teacher'])})?</h3>"
                  f"{table(pd.DataFrame(drift_rows))}" if "teacher" in drift else "")
    return (
        f"{faithful}<p>Maps are contributions to the probability of the <i>predicted</i> class over the image in grey: red for, blue "
        f"against, each map scaled to its own 98th percentile of |value|. Integrated Gradients: {result['ig_steps']} steps from the "
        f"{esc(result['baseline'])} baseline, mean |convergence delta| {result['convergence_delta']['mean_abs']:.4f}. Grad-CAM and "
        "attention rollout only show where the model looks (never against); attention weights are not explanations.</p>"
        f"<table>{head}{''.join(rows)}</table><h3>Mean |IG| map per predicted class (examples)</h3><table><tr>{classes}</tr></table>{drift_html}"
    )


EXPLANATION_VIEWS = {"tokens": token_explanations, "pixels": pixel_explanations}  # one per explainer name in finetune/attribution.py
