"""The causal-LM task end to end: the tiny LM project through `dvc repro` (tests/conftest.py: lm_repo), then read like a
user would (dvc metrics, the saved models, the report), reruns, and a search over LM keys."""
import html
import json
import math

import numpy as np
import pandas as pd
import pytest

from finetune.families.generative.scoring import load_logprobs
from tests.support.repos import copy_repo, planned, plots_page, repro, set_param, sh

STAGES = ["ingest", "preprocess", "train", "evaluate", "member@seed1", "ensemble", "compress", "explain", "report"]


def test_every_stage_runs_once_and_dvc_agrees(lm_repo):
    root, ran = lm_repo
    assert sorted(ran) == sorted(STAGES)
    assert repro(root) == []
    assert sh(["dvc", "status"], root).stdout.strip() == "Data and pipelines are up to date."


def test_perplexity_comes_from_the_saved_token_log_probs_beside_the_pretrained_model(lm_repo):
    root, _ = lm_repo
    shown = next(iter(json.loads(sh(["dvc", "metrics", "show", "--json"], root).stdout).values()))["data"]
    metrics = shown["reports/metrics.json"]["data"]
    test = load_logprobs(root / "reports/evaluate/token_logprobs.safetensors")["test"]
    assert metrics["perplexity"] == pytest.approx(math.exp(-test.astype(np.float64).mean()), rel=1e-5)
    assert metrics["baseline"]["tokens"] == metrics["tokens"] == test.size  # the pretrained model on the same blocks
    assert metrics["vs_baseline"]["perplexity"]["verdict"] == "better"  # fine-tuning learned the corpus
    assert metrics["perplexity"] < metrics["baseline"]["perplexity"]
    samples = json.loads((root / "reports/evaluate/generations.json").read_text())["samples"]
    assert [s["prompt"] for s in samples["fine-tuned"]] == ["to be or", "the slings and"] and set(samples) == {"fine-tuned", "pretrained"}


def test_generation_is_seeded_and_reproducible_from_the_saved_model(lm_repo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.families.generative.generation import generate

    root, _ = lm_repo
    saved = json.loads((root / "reports/evaluate/generations.json").read_text())
    model, tokenizer = AutoModelForCausalLM.from_pretrained(root / "models/model"), AutoTokenizer.from_pretrained(root / "models/model")
    settings = saved["settings"]
    again = generate(model, tokenizer, settings["prompts"][0], max_new_tokens=settings["max_new_tokens"], temperature=settings["temperature"],
                     top_p=settings["top_p"], seed=settings["seed"])
    assert again == saved["samples"]["fine-tuned"][0]["continuation"]


def test_the_ensemble_mixture_is_no_worse_than_its_best_member_on_val(lm_repo):
    root, _ = lm_repo
    combined = json.loads((root / "reports/ensemble.json").read_text())
    assert combined["method"] == "weighted" and set(combined["members"]) == {"primary", "seed1"}
    best_val = min(m["val"]["perplexity"] for m in combined["members"].values())
    assert combined["methods"]["weighted"]["val"]["perplexity"] <= best_val + 1e-6
    assert sum(combined["weights"].values()) == pytest.approx(1)
    assert combined["test"] == combined["methods"]["weighted"]["test"]


def test_int8_reloads_from_disk_and_the_student_has_half_the_layers(lm_repo, monkeypatch):
    from transformers import AutoModelForCausalLM

    from finetune.compression import quantize
    from finetune.families.generative import scoring
    from finetune.families.generative.distill import least_needed_layers
    from finetune.families.generative.scoring import load_blocks

    root, _ = lm_repo
    compressed = json.loads((root / "reports/compress.json").read_text())
    assert set(compressed["models"]) == {"teacher", "int8", "distilled"} and compressed["methods_skipped"] == {}
    monkeypatch.chdir(root)  # read only
    reloaded = scoring.summarize(*scoring.token_scores(quantize.load(root / "models/compressed/int8"), load_blocks("test"), 8))
    assert reloaded["perplexity"] == pytest.approx(compressed["models"]["int8"]["perplexity"], rel=1e-4)
    assert compressed["models"]["int8"]["megabytes"] < compressed["models"]["teacher"]["megabytes"]
    teacher = AutoModelForCausalLM.from_pretrained("models/model" if compressed["teacher"] == "primary" else f"models/members/{compressed['teacher']}")
    assert compressed["models"]["distilled"]["layers"] == least_needed_layers(teacher, load_blocks("train")[:4], keep=1)  # half of 2
    assert all(m["tokens_per_second"] > 0 for m in compressed["models"].values())


def test_explanations_score_every_prompt_token_and_the_report_shows_them(lm_repo):
    root, _ = lm_repo
    explained = json.loads((root / "reports/explain/attributions.json").read_text())
    assert len(explained) == 2
    for example in explained:
        for method in ("feature_ablation", "layer_integrated_gradients"):
            assert len(example["methods"][method]["scores"]) == len(example["prompt_tokens"])
    page = (root / "reports/report.html").read_text()
    for title in ("Summary", "Generations", "Ensemble", "Compression", "Explanations", "Training", "Data", "Params"):
        assert f">{title}" in page


def test_ingest_counts_documents_not_labels_and_explanations_carry_a_verdict(lm_repo):
    root, _ = lm_repo
    ingest = json.loads((root / "reports/ingest.json").read_text())
    assert "labels" not in ingest and ingest["documents"] == ingest["rows_kept"] == 6  # a document's name is no class
    prep = json.loads((root / "reports/preprocess.json").read_text())
    assert prep["profile"]["documents"] == {name: len(names) for name, names in prep["documents"].items()}
    assert prep["profile"]["tokens"] == {name: facts["tokens"] for name, facts in prep["splits"].items()}
    faithfulness = json.loads((root / "reports/explain.json").read_text())["faithfulness"]
    page = (root / "reports/report.html").read_text()
    for method, found in faithfulness.items():
        differences = [e["methods"][method]["faithfulness"] for e in json.loads((root / "reports/explain/attributions.json").read_text())]
        assert found["difference"] == pytest.approx(np.mean([d["top_drop"] - d["random_drop"] for d in differences]))
        assert found["faithful"] is (found["ci95"] is not None and found["ci95"]["low"] > 0)
        assert found["verdict"] in page
    blocks = pd.read_csv(root / "reports/evaluate/blocks.csv")
    worse = int((blocks["loss"] > blocks["pretrained_loss"]).sum())
    assert (f"{worse} of {len(blocks)} test blocks got worse" if worse else "None: fine-tuning lowered the loss of every one") in page


def test_auto_prompts_are_the_openings_of_test_documents(lm_repo, tmp_path):
    from transformers import AutoTokenizer

    root = copy_repo(lm_repo[0], tmp_path / "copy")
    for key, value in (("prompts", "auto"), ("auto_prompts", 2), ("prompt_tokens", 4)):
        set_param(root, f"evaluate.{key}", value)
    assert planned(root) == {"evaluate", "ensemble", "compress", "explain", "report"}  # preprocess kept every test opening
    sh(["dvc", "repro", "evaluate"], root)
    tokenizer = AutoTokenizer.from_pretrained(root / "models/model")
    test_documents = json.loads((root / "reports/preprocess.json").read_text())["documents"]["test"]
    samples = json.loads((root / "reports/evaluate/generations.json").read_text())["samples"]["fine-tuned"]
    assert len(samples) == min(2, len(test_documents))
    for sample in samples:
        document = sample["from"].removeprefix("the opening of test document ")
        assert document in test_documents
        text = (root / "data/raw/corpus" / document).read_text().strip("\n")
        assert sample["prompt"] == tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:4])
    sh(["dvc", "repro", "report"], root)
    chosen = "; ".join(sample["from"] for sample in samples)  # the data profile says where the prompts came from
    assert f"<td>evaluate.prompts</td><td>auto</td><td>{html.escape(chosen)}</td>" in (root / "reports/report.html").read_text()


def test_new_prompts_rerun_only_what_reads_them(lm_repo, tmp_path):
    root = copy_repo(lm_repo[0], tmp_path / "copy")
    set_param(root, "evaluate.prompts", ["to be"])
    # ensemble reads reports/evaluate (whose token log-probs do not change): it reruns, in seconds; nothing trains again
    assert planned(root) == {"evaluate", "ensemble", "compress", "explain", "report"}
    sh(["git", "checkout", "params.yaml"], root)
    set_param(root, "explain.ig_steps", 3)
    assert planned(root) == {"explain", "report"}


def test_new_documents_are_scored_per_document_as_the_model_itself_scores_them(lm_repo, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune import inference
    from tests.support.predicting import served

    root, _ = lm_repo
    documents = {path.name: path.read_text() for path in sorted((root / "data/raw/corpus").glob("*.txt"))}
    pd.DataFrame({"text": [*documents.values(), "\n \n"]}).to_csv(tmp_path / "docs.csv", index=False)
    predictor = inference.load(root / "models/model")
    result = predictor.predict(tmp_path / "docs.csv")
    assert [(b.row, b.problem) for b in result.bad] == [(len(documents) + 1, "empty document")]
    # the same loss from Hugging Face's own: each block_size window of the document's tokens + EOS, first token unscored
    model, tokenizer = AutoModelForCausalLM.from_pretrained(root / "models/model"), AutoTokenizer.from_pretrained(root / "models/model")
    ids = [*tokenizer(next(iter(documents.values())).strip("\n"), add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    windows = [torch.tensor([ids[start:start + 32]]) for start in range(0, len(ids), 32) if len(ids[start:start + 32]) > 1]
    with torch.inference_mode():
        total = sum(model(input_ids=w, labels=w).loss.item() * (w.shape[1] - 1) for w in windows)
    first = result.table.iloc[0]
    assert first["tokens"] == len(ids) - len(windows)
    assert first["loss"] == pytest.approx(total / first["tokens"], abs=1e-4) and first["perplexity"] == pytest.approx(math.exp(first["loss"]))
    answer = served(predictor, [{"text": next(iter(documents.values()))}])
    assert answer["predictions"][0]["loss"] == pytest.approx(first["loss"], abs=1e-5)


def test_dvc_plots_show_renders_every_picture_and_curve_of_the_run(tmp_path, lm_repo):
    plots_page(lm_repo[0], tmp_path / "plots")
