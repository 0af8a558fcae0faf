"""The text task's part of the report: its explanations shown as tokens shaded by each method's attribution."""
from __future__ import annotations

import pandas as pd

from finetune.reporting.html import esc, shaded, table


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
