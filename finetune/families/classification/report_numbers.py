"""The report's sections for a numeric label (data.label_type number, finetune/data/numbers.py) where a classifier's
differ: the label's spread instead of classes, rmse / mae / r2 / spearman with intervals against the train mean, a
predicted-vs-actual scatter instead of a confusion matrix, the largest errors instead of the most confident mistakes, and
the ensemble's and compressed models' numbers. report.py uses them in place of its own."""
from __future__ import annotations

import pandas as pd

from finetune import paths
from finetune.config.sections import PRIMARY
from finetune.io import read_json
from finetune.reporting.html import data_profile, esc, png_file_img, table, training_choices
from finetune.scoring import uncertainty

METRICS = {"rmse": "RMSE", "mae": "MAE", "r2": "R²", "spearman": "Spearman"}


def _bracket(ci: dict) -> str:
    return f"[{ci['low']:.4g}, {ci['high']:.4g}]"


def spread(numbers: dict) -> str:
    return f"{numbers['min']:.4g} / {numbers['p25']:.4g} / {numbers['median']:.4g} / {numbers['p75']:.4g} / {numbers['max']:.4g}"


def profile_section(task, params, twins) -> str | None:
    prep = read_json(paths.PREPROCESS_SUMMARY)
    if "profile" not in prep:
        return None
    found = prep["profile"]
    column = esc(params.data.label_column)
    spreads = pd.DataFrame([{"split": name, "rows": found["rows"][name], "min / p25 / median / p75 / max": spread(n), "mean": n["mean"],
                            "distinct values": n["distinct"]} for name, n in found["numbers"].items()])
    lead = f"<p>The label <code>{column}</code> is a number (a regression head); its spread per split:</p>{table(spreads)}"
    later = training_choices(read_json(paths.TRAIN_SUMMARY)) if paths.TRAIN_SUMMARY.exists() else []
    return data_profile(found, lead, later, twins)


def cards(result: dict, metrics=tuple(METRICS), suffix: str = "") -> str:
    """A card per metric: the test score, its interval, the train-mean baseline and the verdict against it."""
    def card(metric):
        verdict = result["vs_baseline"][metric]["verdict"]
        tone = {"better": "good", "worse": "bad"}.get(verdict, "")
        return (f'<div class="card">Test {METRICS[metric]}{esc(suffix)}<b class="{tone}">{result[metric]:.4g}</b><span class="muted">'
                f'{_bracket(result["ci95"][metric])}<br>baseline {result["baseline"][metric]:.4g}: '
                f'{esc(uncertainty.describe(result["vs_baseline"], metric))}</span></div>')
    return "".join(card(m) for m in metrics)


def summary_section(task, params, noise: str) -> str:
    train, result = read_json(paths.TRAIN_SUMMARY), read_json(paths.METRICS)
    where = f"{train['device']}{' (bf16)' if train['bf16'] else ''}"
    return (f'<div class="cards">{cards(result)}</div><p>Model <code>{esc(params.train.model)}</code> fine-tuned on '
            f"<code>{esc(params.data.source)}</code> to predict <code>{esc(params.data.label_column)}</code> ({esc(params.train.loss)} "
            f"loss on the label standardised by the train mean and standard deviation) for {train['steps']} steps ({train['epochs']} epochs) "
            f"on {esc(where)}; baseline = {esc(result['baseline']['strategy'])} predicted for every test row; {result['test_rows']} test rows. "
            f"Lower RMSE and MAE are better, higher R² and Spearman. {noise}</p>")


def metrics_section(task, params, result: dict | None = None, folder=paths.EVALUATION, suffix: str = "") -> str:
    """The test scores against the baseline and the scatter (a number head's: its result, folder and title suffix)."""
    result = result or read_json(paths.METRICS)
    rows = pd.DataFrame([{"": name, **{label: f"{scores[m]:.4g} {_bracket(scores['ci95'][m])}" for m, label in METRICS.items()}}
                         for name, scores in (("fine-tuned", result), (result["baseline"]["strategy"], result["baseline"]))])
    return (table(rows) + f"<h3>Predicted against actual (test){esc(suffix)}</h3>"
            + png_file_img(folder / "scatter.png", f"predicted against actual{suffix}"))


def errors_section(task, params, rendered, folder=paths.EVALUATION, suffix: str = "") -> str:
    largest = pd.read_csv(folder / "largest_errors.csv").head(params.report.worst_errors)
    shown = largest.assign(example=rendered(task, largest["id"]))[["example", "actual", "predicted", "error"]]
    return f"<p>The largest errors on the test split{esc(suffix)} (predicted - actual).</p>" + table(shown, html_columns=("example",))


def _scores(scores: dict) -> dict:
    shown = {f"{split} {name}": round(scores[split][name], 4) for split in ("val", "test") for name in ("rmse", "mae", "spearman")}
    return shown | {"test RMSE, 95 % interval": _bracket(scores["test"]["ci95"]["rmse"])}


def ensemble_section(task, params, result: dict, noise: str, folder=paths.ENSEMBLE) -> str:
    best = result["best_member_on_val"]
    versus = result["vs_members"][best["name"]]
    tone = {"better": "good", "worse": "bad"}.get(versus["rmse"]["verdict"], "")
    cards = (f'<div class="card">Ensemble ({esc(result["method"])}) test RMSE<b class="{tone}">{result["rmse"]:.4g}</b>'
             f'<span class="muted">{_bracket(result["ci95"]["rmse"])}<br>vs {esc(best["name"])}: {esc(uncertainty.describe(versus, "rmse"))}</span></div>'
             f'<div class="card">Best member on val ({esc(best["name"])}) test RMSE<b>{best["rmse"]:.4g}</b>'
             f'<span class="muted">{_bracket(best["ci95"]["rmse"])}</span></div>')
    summaries = {name: paths.TRAIN_SUMMARY if name == PRIMARY else paths.MEMBER_SUMMARIES / f"{name}.json" for name in result["members"]}
    seconds = {name: read_json(path)["train_runtime_s"] for name, path in summaries.items() if path.exists()}
    rows = [{"": f"member {name}", "weight": round(result["weights"][name], 3), **_scores(scores),
             f"{result['method']} vs member (test RMSE)": uncertainty.describe(result["vs_members"][name], "rmse"),
             "training time (s)": seconds.get(name, "")} for name, scores in result["members"].items()]
    crossed = result["cross_fitted_val"]
    rows += [{"": f"{'→ ' if name == result['method'] else ''}method {name}", **_scores(scores),
              "cross-fitted val RMSE ± SE": f"{crossed[name]['rmse']:.4g} ± {crossed[name]['standard_error']:.3g}"}
             for name, scores in result["methods"].items()]
    return (f'<div class="cards">{cards}</div>{table(pd.DataFrame(rows).astype(object).fillna(""))}'
            f'<p>Method {esc(result["method"])}, chosen by {esc(result["chosen_by"])} ({crossed["folds"]} folds; best_member = '
            f'{esc(result["best_member"])}); soft_vote is the members\' mean; weights: {esc(result["weights_source"])}. {noise}</p>'
            f'<h3>Predicted against actual ({esc(result["method"])})</h3>{png_file_img(folder / "scatter.png", "ensemble scatter")}')


def compress_section(task, params, result: dict, noise: str) -> str:
    columns = {"parameters": "parameters", "size_mb": "size (MB)", "latency_ms_batch_1": "ms, batch 1", "latency_ms_batch_32": "ms, batch 32",
               "rmse": "test RMSE", "mae": "test MAE", "spearman": "test Spearman", "rmse_delta": "Δ RMSE", "size_ratio": "size ×",
               "speedup_batch_1": "speed-up, batch 1", "speedup_batch_32": "speed-up, batch 32",
               "mean_abs_difference_from_teacher": "mean |Δ| from teacher"}
    rows = pd.DataFrame(result["models"]).T[list(columns)].rename(columns=columns)
    rows["parameters"] = rows["parameters"].astype(int)
    rows["RMSE vs teacher"] = [uncertainty.describe(m["vs_teacher"], "rmse") if "vs_teacher" in m else "" for m in result["models"].values()]
    details = result["details"]
    notes = [f"Teacher: <code>{esc(result['teacher'])}</code> (lowest val RMSE of {esc(details['teacher'].get('val_rmse_of_candidates', {}))})"]
    notes += [f"{esc(method)}: skipped ({esc(reason)})" for method, reason in details.get("skipped", {}).items()]
    if "distill" in details:
        notes.append(f"distill: student keeps teacher layers {details['distill']['layers_kept']}, trained "
                     f"{details['distill']['training']['train_runtime_s']} s on the teacher's predictions (alpha = {details['distill']['alpha']})")
    return (f"{table(rows.reset_index(names='model'))}<ul>{''.join(f'<li>{note}</li>' for note in notes)}</ul>"
            f'<p class="muted">CPU latency: median of {params.compress.latency.repeats} runs after warm-up, {result["threads"]} threads; '
            f"scores on the same {result['test_rows']} test rows, each model reloaded from disk. {noise}</p>"
            + png_file_img(paths.COMPRESS / "tradeoff.png", "rmse vs latency vs size"))
