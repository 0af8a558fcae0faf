"""report for generative models (a causal LM): the sections of the report (the report stage writes the page).

Sections: the headline (test perplexity of the fine-tuned vs the pretrained model on the same blocks, intervals and
the paired verdict), generations of both models side by side with their diversity (and, for replies to held-out
conversations, the reference reply and both models' chrF++ / ROUGE-L / exact match), the test blocks whose loss rose
most, the ensemble, compression, explanations (prompt tokens shaded by attribution), training curves, data.
Each section appears when its stage's outputs exist.
"""
from __future__ import annotations

import pandas as pd

from finetune import paths
from finetune.data import profile
from finetune.families.generative import scoring
from finetune.io import read_json
from finetune.reporting.html import adaptive_timeline, data_profile, esc, figure_img, shaded, table, training_choices
from finetune.reporting.plots import plt


def _ppl(scores: dict, ci: dict | None = None) -> str:
    interval = f" [{ci['perplexity']['low']:.2f}, {ci['perplexity']['high']:.2f}]" if ci else ""
    return f"{scores['perplexity']:.2f}{interval}"


def profile_section(params) -> str | None:
    prep = read_json(paths.PREPROCESS_SUMMARY)
    if "profile" not in prep:
        return None
    found = prep["profile"]
    counts = " · ".join(f"{name} {n:,} documents, {found['tokens'][name]:,} tokens" for name, n in found["documents"].items())
    twins = "".join(f"<li>{esc(name)} document {esc(doc)} ~ train document {esc(twin)} (cosine {similarity})</li>"
                    for name in ("val", "test") for doc, twin, similarity in found["near_duplicates"].get(f"{name}_rows_near_train_examples", []))
    facts = {**found, "inputs": {"characters per document": found["characters_per_document"]}}
    later = training_choices(read_json(paths.TRAIN_SUMMARY)) if paths.TRAIN_SUMMARY.exists() else []
    if (paths.EVALUATION / "generations.json").exists():
        auto = params.evaluate.prompts == "auto"
        opened = [sample["from"] for sample in read_json(paths.EVALUATION / "generations.json")["samples"]["fine-tuned"]]
        later.append({"setting": "evaluate.prompts", "value": "auto" if auto else f"{len(opened)} given",
                      "why": "; ".join(map(str, opened)) if auto else profile.SET})
    return data_profile(facts, f"<p>{esc(counts)}.</p>", later, f"<ul>{twins}</ul>" if twins else "")


def headline(params) -> str:
    m = read_json(paths.METRICS)
    rows = pd.DataFrame([
        {"model": "fine-tuned", "test perplexity [95 % interval]": _ppl(m, m["ci95"]), "next-token accuracy": m["token_accuracy"], "tokens": m["tokens"]},
        {"model": m["baseline"]["strategy"], "test perplexity [95 % interval]": _ppl(m["baseline"], m["baseline"]["ci95"]),
         "next-token accuracy": m["baseline"]["token_accuracy"], "tokens": m["baseline"]["tokens"]},
    ])
    return (f"<p>Fine-tuned vs pretrained on the same {m['test_blocks']} test blocks of {m['block_size']} tokens: "
            f"<b>{esc(scoring.describe(m['vs_baseline']))}</b>.</p>" + table(rows))


def generations_section(params) -> str:
    saved = read_json(paths.EVALUATION / "generations.json")
    samples, settings, diversity = saved["samples"], saved["settings"], read_json(paths.METRICS)["generation"]
    referenced = all("reference" in t for t in samples["fine-tuned"])  # replies to held-out conversations
    rows = pd.DataFrame([{"prompt": f"<pre>{esc(t['prompt'])}</pre>", "from": esc(t["from"]),
                          **({"reference": f"<pre>{esc(t['reference'])}</pre>"} if referenced else {}),
                          **{name: f"<pre>{esc(samples[name][i]['continuation'])}</pre>" for name in samples}}
                         for i, t in enumerate(samples["fine-tuned"])])
    facts = pd.DataFrame([{"model": name, **values} for name, values in diversity.items()])
    return (f"<p>Seeded sampling: temperature {settings['temperature']}, top_p {settings['top_p']}, {settings['max_new_tokens']} new tokens.</p>"
            + (replies_scores(read_json(paths.METRICS)["replies"]) if referenced else "")
            + table(rows, html_columns=("prompt", "reference", *samples)) + table(facts))


def replies_scores(replies: dict) -> str:
    """The generated replies against the held-out ones (references.py): each model's scores, then the paired verdict."""
    models = [name for name in replies if name != "vs_pretrained"]
    rows = pd.DataFrame([{"model": name, **{metric: f"{replies[name][metric]:.2f} [{replies[name]['ci95'][metric]['low']:.2f}, "
                                                    f"{replies[name]['ci95'][metric]['high']:.2f}]" for metric in ("chrf", "rouge_l", "exact_match")}}
                         for name in models])
    verdicts = "; ".join(f"{metric} {found['difference']:+.2f} [{found['low']:.2f}, {found['high']:.2f}], p {found['p']:.3f}: {found['verdict']}"
                         for metric, found in replies["vs_pretrained"].items())
    return (f"<p>Replies to {replies[models[0]]['replies']} held-out conversations scored against the replies they had (chrF++, "
            f"ROUGE-L F1, exact match, 0-100, intervals over the conversations). Fine-tuned vs pretrained: {esc(verdicts)}.</p>"
            + table(rows))


def worst_blocks(params) -> str:
    blocks = pd.read_csv(paths.EVALUATION / "blocks.csv")
    blocks["change"] = blocks["loss"] - blocks["pretrained_loss"]
    texts = pd.read_parquet(paths.PREPARED / "test.parquet", columns=["id", "input"])
    worse = blocks[blocks["change"] > 0]
    if worse.empty:
        return f"<p>None: fine-tuning lowered the loss of every one of the {len(blocks)} test blocks.</p>"
    worst = worse.merge(texts, on="id").sort_values("change", ascending=False).head(params.report.worst_errors)
    worst["input"] = worst["input"].map(lambda text: f"<pre>{esc(text)}</pre>")
    return (f"<p>{len(worse)} of {len(blocks)} test blocks got worse with fine-tuning; the {len(worst)} whose loss rose most "
            "(nats per token).</p>") + table(
        worst[["document", "loss", "pretrained_loss", "change", "input"]], html_columns=("input",))


def ensemble_section(params) -> str | None:
    if not paths.ENSEMBLE_METRICS.exists():
        return None
    e = read_json(paths.ENSEMBLE_METRICS)
    if "skipped" in e:
        return f"<p>No ensemble: {esc(e['skipped'])}.</p>"
    rows = [{"model": f"member {name}", "weight": e["weights"][name], "val perplexity": s["val"]["perplexity"],
             "test perplexity [95 %]": _ppl(s["test"], s["ci95"])} for name, s in e["members"].items()]
    rows += [{"model": f"ensemble: {method}", "weight": None, "val perplexity": s["val"]["perplexity"], "test perplexity [95 %]": _ppl(s["test"], s["ci95"])}
             for method, s in e["methods"].items()]
    best = e["vs_best_test_member"]
    return (f"<p>Reported: <b>{esc(e['method'])}</b> ({esc(e['chosen_by'])}); weights {esc(e['weights_source'])}. Against the best member on "
            f"test ({esc(best['member'])}): {esc(scoring.describe(best))}.</p>" + table(pd.DataFrame(rows)))


def compress_section(params) -> str | None:
    if not paths.COMPRESS_METRICS.exists():
        return None
    c = read_json(paths.COMPRESS_METRICS)
    if "skipped" in c:
        return f"<p>Nothing was compressed: {esc(c['skipped'])}.</p>"
    rows = pd.DataFrame([{"model": name, "test perplexity [95 %]": _ppl(r, r["ci95"]), "MB": r["megabytes"], "tokens/s": r["tokens_per_second"],
                          "speed-up": r["speedup"], "vs teacher": scoring.describe(r["vs_teacher"]) if "vs_teacher" in r else ""}
                         for name, r in c["models"].items()])
    skipped = "".join(f"<li>{esc(m)}: {esc(why)}</li>" for m, why in c["methods_skipped"].items())
    return (f"<p>Teacher: {esc(c['teacher'])}; generation timed on {c['threads']} threads "
            f"(int8 kernels: {esc(c['cpu']['int8_instructions'])}), batch 1, KV cache.</p>" + table(rows)
            + (f"<ul>{skipped}</ul>" if skipped else ""))


def explain_section(params) -> str | None:
    if not paths.EXPLAIN_METRICS.exists():
        return None
    summary = read_json(paths.EXPLAIN_METRICS)
    if "skipped" in summary:
        return f"<p>No explanations: {esc(summary['skipped'])}.</p>"
    examples = read_json(paths.EXPLAIN / "attributions.json")
    faith = pd.DataFrame([{"method": m, **{k: f[k] for k in ("top_beats_random_share", "mean_top_drop", "mean_random_drop")},
                           "top minus random [95 %]": "" if f["difference"] is None else f"{f['difference']:.3f}"
                                                       + (f" [{f['ci95']['low']:.3f}, {f['ci95']['high']:.3f}]" if f["ci95"] else "")}
                          for m, f in summary["faithfulness"].items()])
    verdicts = "".join(f"<li><b>{esc(m)}</b>: {esc(f['verdict'])}</li>" for m, f in summary["faithfulness"].items())
    views = "".join(f"<h3>{esc(method)}{'' if summary['faithfulness'][method]['faithful'] else ' (not shown faithful)'}</h3>"
                    f"{attribution_html(e['prompt_tokens'], r['scores'], r['attributed'], e['continuation'])}"
                    for e in examples for method, r in e["methods"].items())
    return ("<p>Green prompt tokens make the generated (underlined) continuation more likely, red ones less. Deletion test: removing the "
            f"top-k attributed prompt tokens vs k random ones, over {summary['examples']} prompts:</p><ul>{verdicts}</ul>" + table(faith) + views)


def attribution_html(tokens: list[str], scores: list[float], attributed: list[bool], continuation: str) -> str:
    """The prompt, each token on a background shaded by its score (green: makes the continuation more likely, red:
    less; opacity relative to this prompt's largest |score|; hover for the value in nats), a token left out (a leading
    BOS) shown muted, then the continuation underlined in bold. Whitespace is kept as decoded."""
    kept = [abs(score) for score, keep in zip(scores, attributed) if keep]
    scale = max(kept, default=0) or 1.0
    parts = [shaded(token, float(score), scale) if keep else f'<span class="muted">{esc(token)}</span>'
             for token, score, keep in zip(tokens, scores, attributed)]
    return f'<p style="white-space:pre-wrap">{"".join(parts)}<b style="text-decoration:underline">{esc(continuation)}</b></p>'


def training_section(params) -> str:
    train = read_json(paths.TRAIN_SUMMARY)
    figure, axes = plt.subplots(figsize=(7, 3.4))
    for folder in ("train", "eval"):
        path = paths.TRAIN_LIVE / "plots" / "metrics" / folder / "loss.tsv"
        if path.exists():
            curve = pd.read_csv(path, sep="\t")
            axes.plot(curve["step"], curve["loss"], marker="o" if folder == "eval" else None, label=f"{folder} loss")
    axes.set_xlabel("step")
    axes.legend()
    image = figure_img(figure, "training loss")
    plt.close(figure)
    parameters = train["parameters"]
    facts = pd.DataFrame([("strategy", parameters["strategy"]), ("trainable parameters", f"{parameters['trainable']:,} of {parameters['parameters']:,}"),
                          ("steps", train["steps"]), *((("how long, and why", train["schedule"]["why"]),) if "schedule" in train else ()),
                          ("best step", train["best_step"]), ("training time (s)", train["train_runtime_s"]),
                          ("best val loss", train["val"].get("loss"))], columns=["", "value"])
    return image + table(facts) + adaptive_timeline(parameters)


def data_section(params) -> str:
    prep = read_json(paths.PREPROCESS_SUMMARY)
    rows = pd.DataFrame([{"split": name, **facts} for name, facts in prep["splits"].items()])
    return f"<p>Dropped documents: {esc(prep['dropped'] or 'none')}.</p>" + table(rows)


SECTIONS = [("Data profile", profile_section), ("Summary", headline), ("Generations", generations_section), ("Ensemble", ensemble_section), ("Compression", compress_section),
            ("Explanations", explain_section), ("Training", training_section), ("Data", data_section),
            ("Blocks that got worse", worst_blocks)]


def run(task, params) -> list[tuple[str, str]]:
    return [(title, html) for title, build in SECTIONS if (html := build(params)) is not None]
