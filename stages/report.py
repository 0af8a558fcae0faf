"""report: one self-contained HTML page (reports/report.html) built from the other stages' outputs.

To add a section (ensemble, compress, explain): write a function `(params) -> html or None`
(None = its inputs do not exist yet, the section is left out), append it to SECTIONS, and list
the files it reads as deps of the report stage in dvc.yaml.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from finetune import paths  # noqa: E402
from finetune.cli import main  # noqa: E402
from finetune.html import esc, figure_img, highlighted_tokens, page, png_file_img, table  # noqa: E402
from finetune.io import atomic_path, read_json  # noqa: E402
from finetune.params import PRIMARY, Params  # noqa: E402


def summary_section(params: Params) -> str:
    result, train = read_json(paths.METRICS), read_json(paths.TRAIN_SUMMARY)
    base = result["baseline"]

    def card(name, value, reference):
        tone = "good" if value > reference else "bad"
        return f'<div class="card">{esc(name)}<b class="{tone}">{value:.3f}</b><span class="muted">baseline {reference:.3f}</span></div>'

    cards = card("Test accuracy", result["accuracy"], base["accuracy"]) + card("Test macro F1", result["f1_macro"], base["f1_macro"])
    cards += card("Test weighted F1", result["f1_weighted"], base["f1_weighted"])
    where = f"{train['device']}{' (bf16)' if train['bf16'] else ''}"
    return (
        f'<div class="cards">{cards}</div><p>Model <code>{esc(params.train.model)}</code> fine-tuned on '
        f"<code>{esc(params.data.source)}</code> for {train['steps']} steps ({train['epochs']} epochs) on {esc(where)}; "
        f"baseline = {esc(base['strategy'])} predicted for every test row; {result['test_rows']} test rows.</p>"
    )


def metrics_section(params: Params) -> str:
    result = read_json(paths.METRICS)
    per_class = pd.DataFrame(result["per_class"]).T.reset_index(names="label")
    per_class["support"] = per_class["support"].astype(int)
    confusion = png_file_img(paths.EVALUATION / "confusion.png", "confusion matrix")
    return f"<h3>Per class (test)</h3>{table(per_class)}<h3>Confusion matrix</h3>{confusion}"


def _curve(axes, folder, names, title):
    for name in names:
        path = paths.TRAIN_LIVE / "plots" / "metrics" / folder / f"{name}.tsv"
        if path.exists():
            frame = pd.read_csv(path, sep="\t")
            axes.plot(frame["step"], frame[name], marker="o" if folder == "eval" else None, label=f"{folder} {name}")
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.legend()


def training_section(params: Params) -> str:
    train = read_json(paths.TRAIN_SUMMARY)
    figure, (loss_axes, score_axes) = plt.subplots(1, 2, figsize=(11, 3.6))
    _curve(loss_axes, "train", ["loss"], "Loss")
    _curve(loss_axes, "eval", ["loss"], "Loss")
    _curve(score_axes, "eval", ["accuracy", "f1_macro"], "Validation scores")
    image = figure_img(figure, "training curves")
    plt.close(figure)
    parameters = train.get("parameters")
    strategy = []
    if parameters:
        strategy = [("strategy", parameters["strategy"]), ("optimizer", parameters["optimizer"]),
                    ("parameters", f"{parameters['parameters']:,}"),
                    ("trainable at the start", f"{parameters['trainable']:,} ({100 * parameters['trainable_share']:.2f} %)"),
                    ("trainable at the end", f"{parameters['trainable_at_end']:,}")]
    facts = pd.DataFrame(
        [
            *strategy,
            ("best step (restored)", train["best_step"]),
            ("stopped early", train["stopped_early"]),
            ("resumed from a checkpoint", train["resumed"]),
            ("training samples / s", train["train_samples_per_second"]),
            ("training time (s)", train["train_runtime_s"]),
            *((f"best val {name}", value) for name, value in train["val"].items()),
        ],
        columns=["", "value"],
    )
    if not parameters:
        return image + table(facts)
    groups = pd.DataFrame(parameters["groups"]).rename(columns={"learning_rate": "peak learning rate"})
    return image + table(facts) + "<h3>Layer groups: learning rate and trainable parameters</h3>" + table(groups)


def data_section(params: Params) -> str:
    ingest, prep = read_json(paths.INGEST_SUMMARY), read_json(paths.PREPROCESS_SUMMARY)
    dropped = [("ingest", reason, n) for reason, n in ingest["dropped"].items()]
    dropped += [("preprocess", reason, n) for reason, n in prep["dropped"].items()]
    splits = pd.DataFrame(
        [
            {"split": name, "rows": s["rows"], "augmented": s["augmented_rows"], "truncated": s["truncated_rows"],
             "mean tokens": s["mean_tokens"], **{f"{label} %": round(100 * n / s["rows"], 1) for label, n in s["labels"].items()}}
            for name, s in prep["splits"].items()
        ]
    )
    return (
        f"<p>{ingest['rows_read']} rows read from <code>{esc(ingest['source'])}</code>, {ingest['rows_kept']} kept by ingest.</p>"
        f"<h3>Splits and label balance</h3>{table(splits)}"
        f"<h3>Rows dropped and why</h3>{table(pd.DataFrame(dropped, columns=['stage', 'reason', 'rows']))}"
        '<p class="muted">Bad rows are kept, with their reason, in data/quarantine/*.csv.</p>'
    )


def errors_section(params: Params) -> str:
    wrong = pd.read_csv(paths.EVALUATION / "misclassified.csv").head(params.report.worst_errors)
    if wrong.empty:
        return "<p>No test example was misclassified.</p>"
    return "<p>The most confident mistakes on the test split.</p>" + table(wrong[["text", "actual", "predicted", "confidence"]])


def ensemble_section(params: Params) -> str | None:
    if not paths.ENSEMBLE_METRICS.exists():
        return None
    result = read_json(paths.ENSEMBLE_METRICS)
    best = result["best_member_on_val"]
    tone = "good" if result["f1_macro"] > best["f1_macro"] else "bad"
    cards = (f'<div class="card">Ensemble ({esc(result["method"])}) test macro F1<b class="{tone}">{result["f1_macro"]:.3f}</b></div>'
             f'<div class="card">Best member on val ({esc(best["name"])}) test macro F1<b>{best["f1_macro"]:.3f}</b></div>')
    summaries = {name: paths.TRAIN_SUMMARY if name == PRIMARY else paths.MEMBER_SUMMARIES / f"{name}.json" for name in result["members"]}
    seconds = {name: read_json(path)["train_runtime_s"] for name, path in summaries.items() if path.exists()}
    rows = [{"": f"member {name}", "weight": round(result["weights"][name], 3), "temperature": round(result["temperatures"][name], 2),
             **_scores(scores), "ensemble fixed": result["changes"][name]["fixed"], "ensemble broke": result["changes"][name]["broke"],
             "training time (s)": seconds.get(name, "")}
            for name, scores in result["members"].items()]
    rows += [{"": f"{'→ ' if name == result['method'] else ''}method {name}", **_scores(scores)} for name, scores in result["methods"].items()]
    changes = pd.read_csv(paths.ENSEMBLE / "changes.csv")
    examples = changes[changes["member"] == best["name"]].groupby("effect").head(params.report.worst_errors)
    return (
        f'<div class="cards">{cards}</div>{table(pd.DataFrame(rows).astype(object).fillna(""))}'
        f'<p class="muted">Members are calibrated by {esc(params.ensemble.calibration)} scaling on val; weights: '
        f'{esc(result["weights_source"])}. Val scores of weighted and stacking are in-sample (they are fitted on val); '
        "test is never used to fit anything. Fixed / broke: test rows the member got wrong and the ensemble right, and the reverse.</p>"
        f'<h3>Confusion matrix ({esc(result["method"])})</h3>{png_file_img(paths.ENSEMBLE / "confusion.png", "ensemble confusion matrix")}'
        f'<h3>Where the ensemble changed {esc(best["name"])}\'s answer</h3>'
        + table(examples[["effect", "text", "actual", "member_predicted", "ensemble_predicted"]])
    )


def compress_section(params: Params) -> str | None:
    if not paths.COMPRESS_METRICS.exists():
        return None
    result = read_json(paths.COMPRESS_METRICS)
    columns = {"parameters": "parameters", "size_mb": "size (MB)", "latency_ms_batch_1": "ms, batch 1", "latency_ms_batch_32": "ms, batch 32",
               "accuracy": "test accuracy", "f1_macro": "test macro F1", "accuracy_delta": "Δ accuracy", "size_ratio": "size ×",
               "speedup_batch_1": "speed-up, batch 1", "speedup_batch_32": "speed-up, batch 32", "agreement_with_teacher": "agrees with teacher"}
    rows = pd.DataFrame(result["models"]).T[list(columns)].rename(columns=columns)
    rows["parameters"] = rows["parameters"].astype(int)
    details = result["details"]
    notes = [f"Teacher: <code>{esc(result['teacher'])}</code>"
             + (f" (best val macro F1 of {esc(details['teacher']['val_f1_macro_of_candidates'])})" if details["teacher"]["val_f1_macro_of_candidates"] else "")]
    if "int8" in details:
        notes.append("int8: torch.ao dynamic quantization of the linear layers" + (", embeddings int8 weight-only" if details["int8"]["embeddings_int8"] else ""))
    if "prune" in details:
        prune = details["prune"]
        notes.append(f"prune: {prune['sparsity_pruned_layers']:.1%} of the pruned layers' weights are zero ({prune['sparsity_all_parameters']:.1%} "
                     "of all parameters); unstructured zeros are stored and multiplied like any weight, so size and latency do not drop")
    if "distill" in details:
        notes.append(f"distill: student keeps teacher layers {details['distill']['layers_kept']}, trained "
                     f"{details['distill']['training']['train_runtime_s']} s on the teacher's soft labels (T = {details['distill']['temperature']}, "
                     f"alpha = {details['distill']['alpha']})")
    return (
        f"{table(rows.reset_index(names='model'))}<ul>{''.join(f'<li>{note}</li>' for note in notes)}</ul>"
        f'<p class="muted">CPU latency: median of {params.compress.latency.repeats} runs after warm-up, {result["threads"]} threads, '
        f"on the first test rows; size = the weight files on disk. Scores on the same {result['test_rows']} test rows, each model reloaded from disk.</p>"
        + png_file_img(paths.COMPRESS / "tradeoff.png", "accuracy vs latency vs size")
    )


def explain_section(params: Params) -> str | None:
    if not paths.EXPLAIN_METRICS.exists():
        return None
    result, saved = read_json(paths.EXPLAIN_METRICS), read_json(paths.EXPLAIN / "attributions.json")
    f = result["faithfulness"]
    curve = pd.DataFrame({"tokens deleted (k)": f["k"], "Δp, top-k IG tokens": f["top_ig_drop"], "Δp, k random tokens": f["random_drop"]})
    verdict = ("IG is more faithful than random here" if f["ig_beats_random"]
               else "IG is NOT more faithful than random deletions on this model")
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
    skipped = "".join(f"<li>{esc(m)} skipped: {esc(why)}</li>" for m, why in result["skipped"].items())
    drift = result["compressed_vs_teacher"]
    drift_rows = [{"model": m, "mean Spearman ρ of IG vs the teacher": v["mean_spearman"] if isinstance(v, dict) else esc(v)}
                  for m, v in drift.items() if m != "teacher"]
    drift_html = (f"<h3>Do the compressed models decide for the same reasons as their teacher ({esc(drift['teacher'])})?</h3>"
                  f"{table(pd.DataFrame(drift_rows))}<p class=\"muted\">Rank correlation of the IG scores of the same tokens for the "
                  "teacher's predicted class, per example, averaged. 1 = same ranking; low values flag a model that now relies on other tokens.</p>"
                  if "teacher" in drift else "")
    return (
        f"<p>Why <code>{esc(result['model'])}</code> predicted what it did, on {result['examples']} test examples. Scores are "
        "contributions to the probability of the <i>predicted</i> class: green for, red against (hover for the value). "
        f"Integrated Gradients: {result['ig_steps']} steps from an all-[PAD] baseline, mean |convergence delta| "
        f"{result['convergence_delta']['mean_abs']:.4f}. Attention: what [CLS] attends to in layer {params.explain.attention_layer}, "
        "averaged over heads (attention weights are not explanations; shown for comparison).</p>"
        f"{'<ul>' + skipped + '</ul>' if skipped else ''}"
        f"<h3>Faithfulness: deleting tokens ([MASK])</h3><p>{verdict}: mean drop of p(predicted) over k = 1..{f['k'][-1]} is "
        f"{f['aopc_top_ig']:.4f} for the top IG tokens vs {f['aopc_random']:.4f} for random ones.</p>{table(curve)}"
        f"<h3>Tokens with the largest mean attribution, per predicted class</h3>{table(pd.DataFrame(global_rows))}{drift_html}"
        f"<h3>Examples</h3>{''.join(cards)}"
    )


def search_section(params: Params) -> str | None:
    summary_file = paths.SEARCH / "summary.json"
    if not summary_file.exists():
        return None
    summary, trials = read_json(summary_file), pd.read_csv(paths.SEARCH / "trials.csv")
    best = summary["best"]
    headline = (f"<p>Best: trial {best['trial']}, {esc(summary['metric'])} {best['value']:.4f} with "
                f"<code>{esc(best['params'])}</code>. <code>python -m flows.search --apply-best</code> writes these values into "
                "params.yaml and runs <code>dvc repro</code>.</p>" if best else "<p>No trial completed yet.</p>")
    ranked = trials.sort_values("value", ascending=summary["direction"] == "minimize", na_position="last")
    return (
        f"<p>{esc(summary['method'])} search (study <code>{esc(summary['study'])}</code>) on {esc(summary['metric'])}: "
        f"{summary['trials']} trials, {summary['complete']} complete, {summary['pruned']} pruned, {summary['failed']} failed. "
        "Trials are scored on validation only; the test split is never used to choose.</p>" + headline
        + png_file_img(paths.SEARCH / "history.png", "metric over trials") + png_file_img(paths.SEARCH / "importance.png", "parameter importance")
        + table(ranked.astype(object).fillna(""))
    )


def _scores(scores: dict) -> dict:
    return {f"{split} {name}": round(scores[split][name], 4) for split in ("val", "test") for name in ("accuracy", "f1_macro")}


def params_section(params: Params) -> str:
    return f"<pre>{esc(yaml.safe_dump(params.model_dump(), sort_keys=False))}</pre>"


SECTIONS = [
    ("Summary", summary_section),
    ("Test metrics", metrics_section),
    ("Ensemble", ensemble_section),
    ("Compression", compress_section),
    ("Explanations", explain_section),
    ("Hyper-parameter search", search_section),
    ("Training", training_section),
    ("Data", data_section),
    ("Worst errors", errors_section),
    ("Params (with defaults filled in)", params_section),
]


def run(params: Params) -> str:
    sections = [(title, html) for title, build in SECTIONS if (html := build(params)) is not None]
    document = page(params.report.title, sections)
    with atomic_path(paths.REPORT_HTML) as tmp:
        tmp.write_text(document, encoding="utf-8")
    print(f"report: wrote {paths.REPORT_HTML} ({len(document) // 1024} KiB, {len(sections)} sections)")
    return document


if __name__ == "__main__":
    main(run, __doc__)
