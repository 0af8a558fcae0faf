"""report for classifiers: the report's sections, from the other stages' outputs (the report stage writes the page).

Examples are rendered by the task (text: the escaped text; images: embedded thumbnails), which may add sections of its
own (images: an augmentation preview and examples per class) and shows its explanations its way (explanation_view).
To add a section: write a function `(task, params) -> html or None` (None = its inputs do not exist yet, the section is
left out), append it to SECTIONS, and list the files it reads as deps of the report stage in dvc.yaml. A numeric label's
sections, where they differ, are report_numbers.py's.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from finetune import paths
from finetune.config.sections import PRIMARY
from finetune.data.labels import read_labelled_csv
from finetune.families.classification import report_numbers
from finetune.io import read_json
from finetune.reporting.html import adaptive_timeline, data_profile, esc, figure_img, png_file_img, table, training_choices
from finetune.reporting.plots import plt
from finetune.scoring import uncertainty


def _rendered(task, ids) -> list[str]:
    """The task's HTML for the prepared test inputs with these ids."""
    inputs = pd.read_parquet(paths.PREPARED / "test.parquet", columns=["id", "input"]).set_index("id")["input"]
    return [task.render(inputs[i]) for i in ids]


def _heads() -> list[tuple[str, dict, Path]]:
    """(title suffix, metrics, evaluate folder) per head: the one, or each of several (data.label_columns)."""
    result = read_json(paths.METRICS)
    if "heads" not in result:
        return [("", result, paths.EVALUATION)]
    return [(f" ({head})", scores, paths.EVALUATION / head) for head, scores in result["heads"].items()]


def _twins(task, near: dict) -> str:
    """The test rows that nearly repeat a train row, next to it."""
    pairs = near.get("test_rows_near_train_examples", [])
    if not pairs:
        return ""
    inputs = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet", columns=["id", "input", "augmented"]).query("~augmented").set_index("id")["input"]
              for name in ("test", "train")}
    shown = pd.DataFrame([{"test example": task.render(inputs["test"][test]), "nearest train example": task.render(inputs["train"][train]),
                           "cosine": similarity} for test, train, similarity in pairs])
    return table(shown, html_columns=("test example", "nearest train example"))


def _number(params) -> bool:
    return params.data.label_type == "number"


def profile_section(task, params) -> str | None:
    prep = read_json(paths.PREPROCESS_SUMMARY)
    if "profile" not in prep:
        return None
    found = prep["profile"]
    if _number(params):
        return report_numbers.profile_section(task, params, _twins(task, found.get("near_duplicates", {})))
    per_head = {"": found["classes"]} if "largest" in found["classes"] else found["classes"]
    rows = " · ".join(f"{name} {n:,}" for name, n in found["rows"].items())
    lead = f"<p>Rows: {esc(rows)}.</p>" + "".join(
        f"<p>{esc(f'Head {head}: ' if head else '')}{c['classes']} classes in train; the largest, {esc(c['largest'][0])} ({c['largest'][1]:,} rows), "
        f"is {c['largest_to_smallest']:g}x the smallest, {esc(c['smallest'][0])} ({c['smallest'][1]:,}); it is {100 * c['majority_share']:.1f} % "
        "of train (what always predicting it would score).</p>" for head, c in per_head.items()) + "".join(
        f"<p>Head {esc(head)}: a number; train min / p25 / median / p75 / max {report_numbers.spread(n)}, mean {n['mean']:.4g}.</p>"
        for head, n in (found.get("numbers") or {}).items())
    later = training_choices(read_json(paths.TRAIN_SUMMARY)) if paths.TRAIN_SUMMARY.exists() else []
    return data_profile(found, lead, later, _twins(task, found.get("near_duplicates", {})))


def summary_section(task, params) -> str:
    if _number(params):
        return report_numbers.summary_section(task, params, _NOISE)
    train = read_json(paths.TRAIN_SUMMARY)

    def card(name, result, metric):
        base, verdict = result["baseline"], result["vs_baseline"][metric]["verdict"]
        tone = {"better": "good", "worse": "bad"}.get(verdict, "")
        return (f'<div class="card">{esc(name)}<b class="{tone}">{result[metric]:.3f}</b><span class="muted">{_bracket(result["ci95"][metric])}<br>'
                f'baseline {base[metric]:.3f}: {esc(uncertainty.describe(result["vs_baseline"], metric))}</span></div>')

    heads = _heads()  # a number head's cards: its RMSE and Spearman
    cards = "".join(report_numbers.cards(r, ("rmse", "spearman"), suffix) if "rmse" in r else
                    card(f"Test accuracy{suffix}", r, "accuracy") + card(f"Test macro F1{suffix}", r, "f1_macro") for suffix, r, _ in heads)
    baselines = "; ".join(f"{esc(r['baseline']['strategy'])}{esc(suffix)}" for suffix, r, _ in heads)
    where = f"{train['device']}{' (bf16)' if train['bf16'] else ''}"
    return (
        f'<div class="cards">{cards}</div><p>Model <code>{esc(params.train.model)}</code> fine-tuned on '
        f"<code>{esc(params.data.source)}</code> for {train['steps']} steps ({train['epochs']} epochs) on {esc(where)}; "
        f"baseline = {baselines} predicted for every test row; {read_json(paths.METRICS)['test_rows']} test rows. {_NOISE}</p>"
    )


def metrics_section(task, params) -> str:
    if _number(params):
        return report_numbers.metrics_section(task, params)
    parts = []
    for suffix, result, folder in _heads():
        if "rmse" in result:  # a number head
            parts.append(f"<h3>Scores (test){esc(suffix)}</h3>" + report_numbers.metrics_section(task, params, result, folder, suffix))
            continue
        per_class = pd.DataFrame(result["per_class"]).T.reset_index(names="label")
        per_class["support"] = per_class["support"].astype(int)
        confusion = png_file_img(folder / "confusion.png", f"confusion matrix{suffix}")
        parts.append(f"<h3>Per class (test){esc(suffix)}</h3>{table(per_class)}<h3>Confusion matrix{esc(suffix)}</h3>{confusion}")
    return "".join(parts)


def _curve(axes, folder, names, title):
    for name in names:
        path = paths.TRAIN_LIVE / "plots" / "metrics" / folder / f"{name}.tsv"
        if path.exists():
            frame = pd.read_csv(path, sep="\t")
            axes.plot(frame["step"], frame[name], marker="o" if folder == "eval" else None, label=f"{folder} {name}")
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.legend()


def _imbalance(facts: dict) -> str:
    weights = facts["class_weights"]
    balance = facts["balance"]
    return "; ".join([f"loss {facts['loss']}" + (f" (gamma {facts['focal_gamma']})" if "focal_gamma" in facts else ""),
                      "class weights " + (", ".join(f"{label} {w:g}" for label, w in weights.items()) if weights else "none"),
                      f"train rows {balance['how']}d {balance['rows_before']} -> {balance['rows_after']}" if balance else "train rows as split"])


def training_section(task, params) -> str:
    train = read_json(paths.TRAIN_SUMMARY)
    figure, (loss_axes, score_axes) = plt.subplots(1, 2, figsize=(11, 3.6))
    _curve(loss_axes, "train", ["loss"], "Loss")
    _curve(loss_axes, "eval", ["loss"], "Loss")
    _curve(score_axes, "eval", ["rmse", "mae"] if _number(params) else ["accuracy", "f1_macro"], "Validation scores")
    image = figure_img(figure, "training curves")
    plt.close(figure)
    parameters = train.get("parameters")
    strategy = []
    if parameters:
        strategy = [("strategy", parameters["strategy"]), ("optimizer", parameters["optimizer"]),
                    ("parameters", f"{parameters['parameters']:,}"),
                    ("trainable at the start", f"{parameters['trainable']:,} ({100 * parameters['trainable_share']:.2f} %)"),
                    ("trainable at the end", f"{parameters['trainable_at_end']:,}")]
        norms = parameters.get("batchnorm")
        if norms:
            strategy += [("BatchNorm layers (statistics kept fixed)", f"{norms['layers']} ({norms['frozen_statistics']})"),
                         ("forwards of a trained BatchNorm on a batch < 8", norms["small_batch_forwards"])]
    facts = pd.DataFrame(
        [
            *strategy,
            *((("how long, and why", train["schedule"]["why"]),) if "schedule" in train else ()),
            *((("loss and class balance", _imbalance(train["imbalance"])),) if "imbalance" in train else ()),
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
    return (image + table(facts) + "<h3>Layer groups: learning rate and trainable parameters</h3>" + table(groups)
            + adaptive_timeline(parameters))


def _shares(counts: dict, rows: int) -> dict:
    """Each label's share of a split's rows ("label %"); several heads' as "head: label %", a number head's median."""
    if not any(isinstance(v, dict) for v in counts.values()):
        return {f"{label} %": round(100 * n / rows, 1) for label, n in counts.items()}
    shown = {}
    for head, labels in counts.items():
        if "median" in labels and "distinct" in labels:  # a number head's quantiles (finetune/data/numbers.py)
            shown[f"{head} median"] = labels["median"]
        else:
            shown |= {f"{head}: {label} %": round(100 * n / rows, 1) for label, n in labels.items()}
    return shown


def data_section(task, params) -> str:
    ingest, prep = read_json(paths.INGEST_SUMMARY), read_json(paths.PREPROCESS_SUMMARY)
    dropped = [("ingest", reason, n) for reason, n in ingest["dropped"].items()]
    dropped += [("preprocess", reason, n) for reason, n in prep["dropped"].items()]
    splits = pd.DataFrame(
        [
            {"split": name, **{key.removesuffix("_rows").replace("_", " "): value for key, value in s.items() if key != "labels"},
             **({f"label {key}": value for key, value in s["labels"].items()} if _number(params) else
                _shares(s["labels"], s["rows"]))}
            for name, s in prep["splits"].items()
        ]
    )
    ignored = "".join(f", {n} ignored ({esc(reason)})" for reason, n in ingest.get("ignored", {}).items())
    return (
        f"<p>{ingest['rows_read']} rows read from <code>{esc(ingest['source'])}</code>{ignored}, {ingest['rows_kept']} kept by ingest.</p>"
        f"<h3>Splits and label balance</h3>{table(splits)}"
        f"<h3>Rows dropped and why</h3>{table(pd.DataFrame(dropped, columns=['stage', 'reason', 'rows']))}"
        '<p class="muted">Bad rows are kept, with their reason, in data/quarantine/*.csv.</p>'
    )


def errors_section(task, params) -> str:
    if _number(params):
        return report_numbers.errors_section(task, params, _rendered)
    parts = []
    for suffix, result, folder in _heads():
        if "rmse" in result:  # a number head
            parts.append(report_numbers.errors_section(task, params, _rendered, folder, suffix))
            continue
        wrong = read_labelled_csv(folder / "misclassified.csv").head(params.report.worst_errors)
        if wrong.empty:
            parts.append(f"<p>No test example was misclassified{esc(suffix)}.</p>")
            continue
        shown = wrong.assign(example=_rendered(task, wrong["id"]))[["example", "actual", "predicted", "confidence"]]
        parts.append(f"<p>The most confident mistakes on the test split{esc(suffix)}.</p>" + table(shown, html_columns=("example",)))
    return "".join(parts)


def ensemble_section(task, params) -> str | None:
    if not paths.ENSEMBLE_METRICS.exists():
        return None
    result = read_json(paths.ENSEMBLE_METRICS)
    if "skipped" in result:
        return f"<p>No ensemble: {esc(result['skipped'])}.</p>"
    if _number(params):
        return report_numbers.ensemble_section(task, params, result, _NOISE)
    if "heads" not in result:
        return _ensemble_head(task, params, result, paths.ENSEMBLE, "")
    return "".join(f"<h3>{esc(head)}</h3>" + (report_numbers.ensemble_section(task, params, r, _NOISE, paths.ENSEMBLE / head) if "rmse" in r else
                                               _ensemble_head(task, params, r, paths.ENSEMBLE / head, f" ({head})"))
                   for head, r in result["heads"].items())


def _ensemble_head(task, params, result: dict, folder: Path, suffix: str) -> str:
    best = result["best_member_on_val"]
    versus = result["vs_members"][best["name"]]
    tone = {"better": "good", "worse": "bad"}.get(versus["f1_macro"]["verdict"], "")
    cards = (f'<div class="card">Ensemble ({esc(result["method"])}) test macro F1<b class="{tone}">{result["f1_macro"]:.3f}</b>'
             f'<span class="muted">{_bracket(result["ci95"]["f1_macro"])}<br>vs {esc(best["name"])}: {esc(uncertainty.describe(versus))}</span></div>'
             f'<div class="card">Best member on val ({esc(best["name"])}) test macro F1<b>{best["f1_macro"]:.3f}</b>'
             f'<span class="muted">{_bracket(best["ci95"]["f1_macro"])}</span></div>')
    summaries = {name: paths.TRAIN_SUMMARY if name == PRIMARY else paths.MEMBER_SUMMARIES / f"{name}.json" for name in result["members"]}
    seconds = {name: read_json(path)["train_runtime_s"] for name, path in summaries.items() if path.exists()}
    rows = [{"": f"member {name}", "weight": round(result["weights"][name], 3), "temperature": round(result["temperatures"][name], 2),
             **_scores(scores), f"{result['method']} vs member (test macro F1)": uncertainty.describe(result["vs_members"][name]),
             "ensemble fixed": result["changes"][name]["fixed"], "ensemble broke": result["changes"][name]["broke"],
             "training time (s)": seconds.get(name, "")}
            for name, scores in result["members"].items()]
    crossed = result["cross_fitted_val"]
    rows += [{"": f"{'→ ' if name == result['method'] else ''}method {name}", **_scores(scores),
              "cross-fitted val macro F1 ± SE": f"{crossed[name]['f1_macro']:.3f} ± {crossed[name]['standard_error']:.3f}"}
             for name, scores in result["methods"].items()]
    changes = read_labelled_csv(folder / "changes.csv")
    examples = changes[changes["member"] == best["name"]].groupby("effect").head(params.report.worst_errors)
    examples = examples.assign(example=_rendered(task, examples["id"]))
    return (
        f'<div class="cards">{cards}</div>{table(pd.DataFrame(rows).astype(object).fillna(""))}'
        f'<p>Method {esc(result["method"])}, chosen by {esc(result["chosen_by"])} ({crossed["folds"]} folds; best_member = '
        f'{esc(result["best_member"])}). Cross-fitted: each val fold predicted by what was fitted on the other folds.</p>'
        f'<p class="muted">Members are calibrated by {esc(params.ensemble.calibration)} scaling on val; weights: '
        f'{esc(result["weights_source"])}. Val scores of weighted and stacking are in-sample (they are fitted on val); '
        "test is never used to fit anything. Fixed / broke: test rows the member got wrong and the ensemble right, and the reverse. "
        f"{_NOISE}</p>"
        f'<h3>Confusion matrix ({esc(result["method"])})</h3>{png_file_img(folder / "confusion.png", f"ensemble confusion matrix{suffix}")}'
        f'<h3>Where the ensemble changed {esc(best["name"])}\'s answer</h3>'
        + table(examples[["effect", "example", "actual", "member_predicted", "ensemble_predicted"]], html_columns=("example",))
    )


def compress_section(task, params) -> str | None:
    if not paths.COMPRESS_METRICS.exists():
        return None
    result = read_json(paths.COMPRESS_METRICS)
    if "skipped" in result:
        return f"<p>Nothing was compressed: {esc(result['skipped'])}.</p>"
    if _number(params):
        return report_numbers.compress_section(task, params, result, _NOISE)
    columns = {"parameters": "parameters", "size_mb": "size (MB)", "latency_ms_batch_1": "ms, batch 1", "latency_ms_batch_32": "ms, batch 32",
               "accuracy": "test accuracy", "f1_macro": "test macro F1", "accuracy_delta": "Δ accuracy", "size_ratio": "size ×",
               "speedup_batch_1": "speed-up, batch 1", "speedup_batch_32": "speed-up, batch 32", "agreement_with_teacher": "agrees with teacher"}
    rows = pd.DataFrame(result["models"]).T[list(columns)].rename(columns=columns)
    rows["parameters"] = rows["parameters"].astype(int)
    rows.insert(6, "95 % interval", [_bracket(model["ci95"]["accuracy"]) for model in result["models"].values()])
    rows["accuracy vs teacher"] = [uncertainty.describe(m["vs_teacher"], "accuracy") if "vs_teacher" in m else "" for m in result["models"].values()]
    for head, scores in next(iter(result["models"].values())).get("heads", {}).items():  # several heads: each head's accuracy (RMSE)
        metric = "rmse" if "rmse" in scores else "accuracy"
        rows[f"{metric} ({head})"] = [m["heads"][head][metric] for m in result["models"].values()]
    details = result["details"]
    notes = [f"Teacher: <code>{esc(result['teacher'])}</code>" + (f"; scored on {esc(result['scored'])}" if "scored" in result else "")
             + (f" (best val macro F1 of {esc(details['teacher']['val_f1_macro_of_candidates'])})" if details["teacher"]["val_f1_macro_of_candidates"] else "")]
    if "int8" in details:
        notes.append(f"int8: {esc(details['int8']['scheme'])}" + "".join(f"; {esc(key.replace('_', ' '))}: {esc(value)}"
                                                                     for key, value in details["int8"].items() if key != "scheme"))
    if "prune" in details:
        prune = details["prune"]
        facts = ", ".join(f"{esc(key.replace('_', ' '))} {value:.1%}" for key, value in prune.items() if isinstance(value, float) and key != "sparsity_requested")
        notes.append(f"prune ({esc(prune['structure'])}, sparsity {prune['sparsity_requested']}): {facts}"
                     + ("; unstructured zeros are stored and multiplied like any weight, so size and latency do not drop"
                        if prune["structure"] == "unstructured" else ""))
    for method, reason in details.get("skipped", {}).items():
        notes.append(f"{esc(method)}: skipped ({esc(reason)})")
    if "distill" in details:
        notes.append(f"distill: student keeps teacher layers {details['distill']['layers_kept']}, trained "
                     f"{details['distill']['training']['train_runtime_s']} s on the teacher's soft labels (T = {details['distill']['temperature']}, "
                     f"alpha = {details['distill']['alpha']})")
    onnx_columns = {"onnx_size_mb": "ONNX size (MB)", "onnx_latency_ms_batch_1": "onnxruntime ms, batch 1",
                    "onnx_latency_ms_batch_32": "onnxruntime ms, batch 32", "onnx_speedup_vs_torch_batch_1": "× PyTorch, batch 1",
                    "onnx_speedup_vs_torch_batch_32": "× PyTorch, batch 32", "onnx_prediction_agreement": "agrees with PyTorch",
                    "onnx_max_abs_probability_difference": "max |Δ probability|"}
    exported = {name: row for name, row in result["models"].items() if "onnx_size_mb" in row}
    onnx = (f"<h3>ONNX (onnxruntime, CPU)</h3>{table(pd.DataFrame(exported).T[list(onnx_columns)].rename(columns=onnx_columns).reset_index(names='model'))}"
            + "".join(f"<p>{esc(name)}: not exported ({esc(reason)})</p>" for name, reason in details["onnx"]["skipped"].items())
            if "onnx" in details else "")
    return (
        f"{table(rows.reset_index(names='model'))}<ul>{''.join(f'<li>{note}</li>' for note in notes)}</ul>{onnx}"
        f'<p class="muted">CPU latency: median of {params.compress.latency.repeats} runs after warm-up, {result["threads"]} threads '
        f"(int8 kernels: {esc(result['cpu']['int8_instructions'])}; the int8 speed-up depends on them), on the first test rows; size = the weight files on disk. Scores on the same {result['test_rows']} test rows, each model reloaded from disk. "
        f"{_NOISE}</p>"
        + png_file_img(paths.COMPRESS / "tradeoff.png", "accuracy vs latency vs size")
    )


def explain_section(task, params) -> str | None:
    if not paths.EXPLAIN_METRICS.exists():
        return None
    result = read_json(paths.EXPLAIN_METRICS)
    if "skipped" in result:
        return f"<p>No explanations: {esc(result['skipped'])}.</p>"
    saved = read_json(paths.EXPLAIN / "attributions.json")
    if "heads" not in result:
        return _explained(task, params, result, saved, _number(params))
    number_heads = params.data.number_heads
    return "".join(f"<h3>{esc(head)}</h3>" + _explained(task, params, r, saved["heads"][head], head in number_heads) for head, r in result["heads"].items())


def _explained(task, params, result: dict, saved: dict, number: bool) -> str:
    f = result["faithfulness"]
    explained, delta = ("the prediction", "Δ prediction") if number else ("p(predicted)", "Δp")
    curve = pd.DataFrame({"features deleted (k)": f["k"], f"{delta}, top-k IG features": f["top_ig_drop"], f"{delta}, k random features": f["random_drop"]})
    ig = (f.get("beats_random") or {}).get("integrated_gradients") or {}
    interval = f" (margin over random {ig['ci95']['low']:+.4f} to {ig['ci95']['high']:+.4f}, 95 % over the examples)" if ig.get("ci95") else ""
    verdict = {True: "IG is more faithful than random here" + interval,
               False: "IG is NOT shown more faithful than random deletions on this model" + interval
               + ": its highlights are not evidence of what the model relies on",
               None: "Too few distinct examples to tell whether IG beats random deletions"}[f["ig_beats_random"]]
    skipped = "".join(f"<li>{esc(m)} skipped: {esc(why)}</li>" for m, why in result["methods_skipped"].items())
    return (
        f"<p>Why <code>{esc(result['model'])}</code> predicted what it did, on {result['examples']} test examples.</p>"
        f"{'<ul>' + skipped + '</ul>' if skipped else ''}"
        f"<h3>Faithfulness: deleting what the attributions rank highest</h3><p>{verdict}: mean drop of {explained} over "
        f"k = 1..{f['k'][-1]} is {f['aopc_top_ig']:.4f} for the top IG features vs {f['aopc_random']:.4f} for random ones.</p>{table(curve)}"
        + task.explanation_view(result, saved, params)
    )


def search_section(task, params) -> str | None:
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


_NOISE = ("[low, high]: 95 % bootstrap interval over the test rows; better / worse / no significant difference: a paired "
          "bootstrap on the same rows at p < 0.05 (finetune/scoring/uncertainty.py). Differences inside the noise are not findings.")


def _bracket(ci: dict) -> str:
    return f"[{ci['low']:.3f}, {ci['high']:.3f}]"


def _scores(scores: dict) -> dict:
    shown = {f"{split} {name}": round(scores[split][name], 4) for split in ("val", "test") for name in ("accuracy", "f1_macro")}
    return shown | {"test macro F1, 95 % interval": _bracket(scores["test"]["ci95"]["f1_macro"])}


SECTIONS = [
    ("Data profile", profile_section),
    ("Summary", summary_section),
    ("Test metrics", metrics_section),
    ("Ensemble", ensemble_section),
    ("Compression", compress_section),
    ("Explanations", explain_section),
    ("Hyper-parameter search", search_section),
    ("Training", training_section),
    ("Data", data_section),
    ("Worst errors", errors_section),
]


def run(task, params) -> list[tuple[str, str]]:
    sections = [(title, html) for title, build in SECTIONS if (html := build(task, params)) is not None]
    return sections + task.report_sections(params)
