import re

import pandas as pd

from stages import compress, ensemble, evaluate, explain, member, report
from tests.support.params import load, tiny_params


def test_report_is_one_self_contained_page_with_every_section(trained_workdir, tiny_model):
    raw = tiny_params(tiny_model)
    raw["ensemble"]["members"] = {"tfidf": {"kind": "tfidf"}}
    params = load(raw)
    evaluate.run(params)
    assert ">Ensemble" not in report.run(params)  # a section whose inputs do not exist yet is left out
    member.run(params, "tfidf")
    ensemble.run(params)
    assert ">Compression" not in report.run(params)
    compress.run(params)  # teacher "best": primary, the only fine-tuned model here
    test = pd.read_parquet("data/prepared/test.parquet")
    test.assign(truncated=test.index % 2 == 0).to_parquet("data/prepared/test.parquet")  # as if half were cut at max_length
    explain.run(params)
    document = report.run(params)

    assert open("reports/report.html", encoding="utf-8").read() == document
    assert re.findall(r"<h2[^>]*>([^<]+)</h2>", document)[0] == "Data profile"  # what the data is like comes first
    profile = document[document.index(">Data profile</h2>"):document.index(">Summary</h2>")]
    for shown in ("Inputs, per split", "Near duplicates", "Chosen from the data, or set", "train.epochs", "preprocess.max_length",
                  "preprocess.long_texts", "train.memory_budget_gib", "8 rows per forward pass", "a batch of 8 rows fits: estimated"):
        assert shown in profile
    for title in ("Summary", "Test metrics", "Ensemble", "Compression", "Explanations", "Training", "Data", "Worst errors", "Params"):
        assert f">{title}" in document
    # nothing is fetched: no external URL in any src/href, no script or stylesheet link
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", document)
    assert "<script" not in document and "<link" not in document
    assert document.count('src="data:image/png;base64,') == 4  # 2 confusion matrices, training curves, compression tradeoff
    assert "Tiny report" in document and "majority class" in document
    assert "member tfidf" in document and "→ method soft_vote" in document
    assert document.count('<span title="') >= 6 * 3 * 3  # 6 examples, 3 methods, >= 3 tokens each, every one shaded
    assert "IG is more faithful than random here" in document
    assert "[… truncated at max_length]" in document
    assert "Do the compressed models decide for the same reasons as their teacher (primary)?" in document
    assert "Teacher: <code>primary</code>" in document and "<td>distill</td>" in document and "speed-up, batch 32" in document
    # texts are escaped, never injected as HTML
    assert "<td><b>" not in document


def test_the_report_shows_the_strategy_and_the_last_search(trained_workdir, tiny_model):
    from finetune import search

    params = load(tiny_params(tiny_model))
    evaluate.run(params)
    document = report.run(params)
    assert ">Hyper-parameter search" not in document  # no search ran yet
    assert "<td>strategy</td><td>full</td>" in document and "peak learning rate" in document and "<td>layer.1</td>" in document

    search.run_search(params, lambda number: {"state": "complete", "value": 0.5 + number / 10, "seconds": 1.0}, log=lambda _: None)
    document = report.run(params)
    assert ">Hyper-parameter search" in document and "python -m flows.search --apply-best" in document
    assert "Best: trial 1, val f1_macro 0.6000" in document
    assert document.count('src="data:image/png;base64,') == 4  # confusion matrix, training curves, search history, importance


def test_the_report_shows_an_adaptive_runs_timeline(trained_workdir, tiny_model):
    import html
    import json

    from stages import train

    params = load(tiny_params(tiny_model, train={"strategy": "adaptive", "epochs": 3, "learning_rate": 1e-4,
                                                 "early_stopping": {"patience": 0}}))
    train.run(params)
    evaluate.run(params)
    document = report.run(params)
    timeline = json.loads(open("reports/train.json").read())["parameters"]["adaptive"]["timeline"]
    assert "Adaptive (unfreeze_on_plateau): trainable layer groups over training" in document
    assert len(timeline) == 3 and any(row["change"] for row in timeline)
    for row in timeline:
        assert f"<td>{html.escape(', '.join(row['trainable']))}</td><td>{html.escape(row['change'] or '-')}</td>" in document
