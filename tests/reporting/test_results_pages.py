"""The results pages are rendered from the committed runs, never typed: the committed pages and the README's table are
what `finetune results --pages` renders from docs/results/, every shipped config has a committed run, and a page shows
the numbers of its run folder (heads, intervals, baseline, stage times) whatever the task."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from finetune.reporting.results_pages import README_END, README_START, page, render, write
from tests.support.repos import PROJECT


def test_the_committed_pages_and_readme_table_are_what_the_command_renders():
    rendered = render(PROJECT)
    assert PROJECT / "README.md" in rendered  # the README has its markers
    for path, text in rendered.items():
        assert path.read_text(encoding="utf-8") == text, f"{path.relative_to(PROJECT)} differs from its runs: make results"


def test_every_shipped_config_has_a_committed_run_with_its_report():
    configs = {path.stem for path in (PROJECT / "configs").glob("*.yaml")}
    runs = {path.parent.name for path in (PROJECT / "docs" / "results").glob("*/run.json")}
    assert runs == configs
    for config in configs:
        folder = PROJECT / "docs" / "results" / config
        assert (folder / "reports" / "report.html").is_file() and (folder / "dvc.lock").is_file()


def _run_folder(root: Path, metrics: dict, report: bool) -> Path:
    folder = root / "docs" / "results" / "mine"
    (folder / "reports").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "config": "mine", "commit": "0123456789abcdef", "started": "2026-12-05T03:00:00+00:00", "seconds": 754.4,
        "stage_seconds": {"ingest": 4.2, "train": 100.4, "report": 649.8},
        "machine": {"cpu": "Some CPU", "cores": 2, "memory_gib": 24, "gpu": None, "python": "3.11", "torch": "2.x"}}))
    (folder / "params.yaml").write_text(yaml.safe_dump({"task": "image-classification", "data": {"source": "data/raw/x"},
                                                        "train": {"model": "models/pretrained/y"}}))
    (folder / "reports" / "metrics.json").write_text(json.dumps(metrics))
    if report:
        (folder / "reports" / "report.html").write_text("<html></html>")
    return folder


def test_a_page_shows_each_heads_scores_with_intervals_against_the_baseline_and_the_stage_times(tmp_path):
    head = {"accuracy": 0.9, "f1_macro": 0.85, "ci95": {"accuracy": {"low": 0.8, "high": 0.95}, "f1_macro": {"low": 0.7, "high": 0.9}},
            "baseline": {"strategy": "majority class (circle)", "accuracy": 0.5, "f1_macro": 0.2,
                         "ci95": {"accuracy": {"low": 0.45, "high": 0.55}, "f1_macro": {"low": 0.18, "high": 0.22}}},
            "vs_baseline": {"accuracy": {"verdict": "better"}}}
    folder = _run_folder(tmp_path, {"accuracy": 0.88, "heads": {"shape": head, "colour": {**head, "accuracy": 0.7}}}, report=False)
    text = page(folder)
    assert "| shape | accuracy | 0.9000 [0.8000, 0.9500] | 0.5000 [0.4500, 0.5500] | majority class (circle) | better |" in text
    assert "| colour | accuracy | 0.7000 [0.8000, 0.9500] |" in text
    assert "| shape | f1_macro | 0.8500 [0.7000, 0.9000] | 0.2000 [0.1800, 0.2200] | majority class (circle) | - |" in text
    assert "| train | 1 min 40 s |" in text and "**12 min 34 s**" in text
    assert "commit `0123456`" in text and "Some CPU (2 cores, 24 GiB, no GPU" in text
    assert "report.html" not in text  # no report in the folder: no link to one
    assert "## Compression" not in text and "## Ensemble" not in text  # stages that wrote nothing get no section


def test_a_language_models_page_is_judged_on_its_interval_metric(tmp_path):
    metrics = {"perplexity": 21.5, "loss": 3.07, "ci95": {"perplexity": {"low": 19.25, "high": 24.0}},
               "baseline": {"strategy": "the pretrained model", "perplexity": 35.125, "ci95": {"perplexity": {"low": 31.0, "high": 40.0}}}}
    text = page(_run_folder(tmp_path, metrics, report=True))
    assert "| - | perplexity | 21.5 [19.25, 24] | 35.12 [31, 40] | the pretrained model | - |" in text
    assert "[The run's HTML report](mine/reports/report.html)" in text
    assert "| - | loss |" not in text  # no interval: not a headline number


def test_a_chat_page_shows_the_scored_replies_the_verdict_and_the_stop_token_share(tmp_path):
    def scored(chrf: float) -> dict:
        return {"chrf": chrf, "rouge_l": 20.0, "exact_match": 0.0, "replies": 8,
                "ci95": {key: {"low": 1.5, "high": 30.0} for key in ("chrf", "rouge_l", "exact_match")}}
    verdict = {"difference": 12.25, "low": 4.0, "high": 20.5, "p": 0.001, "verdict": "better"}
    metrics = {"perplexity": 21.5, "ci95": {"perplexity": {"low": 19.25, "high": 24.0}},
               "generation": {"fine-tuned": {"distinct_2": 0.95, "ended_at_stop_token": 1.0},
                              "pretrained": {"distinct_2": 0.88, "ended_at_stop_token": 0.125}},
               "replies": {"fine-tuned": scored(25.5), "pretrained": scored(13.25), "vs_pretrained": {"chrf": verdict}}}
    text = page(_run_folder(tmp_path, metrics, report=True))
    assert "Replies to 8 held-out prompts" in text and "Fine-tuned vs pretrained: chrf +12.25 [4.00, 20.50]: better." in text
    assert "| fine-tuned | 25.5 [1.5, 30] | 20 [1.5, 30] | 0.0000 [1.5, 30] | 1.0000 | 0.9500 |" in text
    assert "| pretrained | 13.25 [1.5, 30] | 20 [1.5, 30] | 0.0000 [1.5, 30] | 0.1250 | 0.8800 |" in text
    lm = page(_run_folder(tmp_path / "lm", {**metrics, "replies": {}}, report=True))  # no references: the stop share only
    assert "| model | ended at a stop token | distinct-2 |" in lm and "Replies to" not in lm


def test_writing_the_pages_fills_the_readme_between_its_markers_and_nothing_else(tmp_path):
    folder = _run_folder(tmp_path, {"perplexity": 21.5, "ci95": {"perplexity": {"low": 19.25, "high": 24.0}}}, report=True)
    (tmp_path / "README.md").write_text(f"intro\n\n{README_START}\nold table\n{README_END}\n\nrest\n")
    written = write(tmp_path)
    assert set(written) == {tmp_path / "README.md", tmp_path / "docs/results/index.md", tmp_path / "docs/results/mine.md"}
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("intro\n\n") and readme.endswith(f"{README_END}\n\nrest\n") and "old table" not in readme
    assert ("| image-classification | [mine](docs/results/mine.md) | `models/pretrained/y` | `data/raw/x` | perplexity 21.5 [19.25, 24] "
            "| - | 12 min 34 s |") in readme
    assert "Each run from nothing on Some CPU (2 cores, 24 GiB, no GPU; torch 2.x)." in readme
    assert write(tmp_path) == []  # a second run changes nothing
    assert folder.is_dir()
