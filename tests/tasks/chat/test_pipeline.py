"""The chat task through ingest, preprocess, train and evaluate on a tiny ChatML model: every format read, broken
conversations quarantined by rule, labels only on the assistant's replies in the packed blocks, and the perplexity the
evaluate stage reports is the model's own loss on those tokens."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from finetune.tasks import get_task
from tests.support.params import load, run_stages, tiny_chat_params

TASK = get_task("chat")
PAIRS = [("to be or not", "that is the question"), ("whether tis nobler", "in the mind to suffer"),
         ("the slings and arrows", "of outrageous fortune"), ("or to take arms", "against a sea of troubles")]


def write_chats(path: Path, copies: int = 6) -> list[str]:
    """Conversations in every format (multi-turn messages, alpaca, prompt/response) plus three broken ones; the problems."""
    lines = []
    for copy in range(copies):
        for i, (prompt, reply) in enumerate(PAIRS):
            system = [{"role": "system", "content": f"speak {copy}"}] if i % 2 else []
            follow = PAIRS[(i + 1) % len(PAIRS)]
            lines.append({"messages": [*system, {"role": "user", "content": f"{prompt} {copy}"}, {"role": "assistant", "content": reply},
                                       {"role": "user", "content": follow[0]}, {"role": "assistant", "content": f"{follow[1]} {copy}"}]})
        lines.append({"instruction": f"continue {copy}", "input": PAIRS[copy % 4][0], "output": PAIRS[copy % 4][1]})
        lines.append({"prompt": f"say {copy}", "response": PAIRS[(copy + 1) % 4][1]})
    lines += [{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "hello"}]},
              {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": " "}]},
              {"text": "no conversation here"}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return ["turn 1 is assistant", "turn 2 (assistant) is empty", "neither `messages`"]


@pytest.fixture
def chat_project(workdir, tiny_chat_lm):
    problems = write_chats(Path("data/raw/chats.jsonl"))
    params = load(tiny_chat_params(tiny_chat_lm))
    run_stages("ingest", "preprocess", params=params)
    return params, problems


def test_broken_conversations_are_quarantined_with_the_rule_they_break(chat_project):
    _, problems = chat_project
    quarantined = pd.read_csv("data/quarantine/ingest.csv")
    assert len(quarantined) == 3 and all(any(p in q for q in quarantined["problem"]) for p in problems), quarantined["problem"].tolist()
    assert len(pd.read_parquet("data/ingested.parquet")) == 6 * 6


def test_blocks_learn_only_the_assistants_replies(chat_project, tiny_chat_lm):
    tokenizer = TASK.models.load_processor(str(tiny_chat_lm), False)
    replies = {reply for _, reply in PAIRS}
    for split in ("train", "val", "test"):
        table = pd.read_parquet(f"data/prepared/{split}.parquet")
        for ids, labels in zip(table["input_ids"], table["labels"]):
            learnt = tokenizer.decode(ids[labels != -100])
            # the labelled tokens are whole replies, each ending with the end-of-turn token, and nothing the user said
            assert learnt.endswith("<|im_end|>") and all(any(part.startswith(r) for r in replies) for part in learnt.split("<|im_end|>")[:-1])
            assert not any(prompt in learnt for prompt, _ in PAIRS)
            assert (labels[ids == tokenizer.pad_token_id][-1:] == -100).all()  # the padding at the end


def test_evaluate_scores_the_replies_tokens_and_generates_from_the_conversations(chat_project, tiny_chat_lm):
    from transformers import AutoModelForCausalLM

    params, _ = chat_project
    run_stages("train", "evaluate", params=params)
    metrics = json.loads(Path("reports/metrics.json").read_text())
    test = pd.read_parquet("data/prepared/test.parquet")
    ids, labels = (torch.as_tensor(np.stack(test[c].to_numpy())) for c in ("input_ids", "labels"))
    tuned = TASK.models.load_trained("models/model", False)
    with torch.no_grad():
        loss = tuned(input_ids=ids, labels=labels).loss.item()  # the model's own mean over the labelled tokens
        base = AutoModelForCausalLM.from_pretrained(tiny_chat_lm)(input_ids=ids, labels=labels).loss.item()
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4) and metrics["tokens"] == int((labels[:, 1:] != -100).sum())
    assert metrics["baseline"]["loss"] == pytest.approx(base, rel=1e-4) and metrics["loss"] < base
    assert set(metrics["replies"]) == {"fine-tuned", "pretrained", "vs_pretrained"}
    assert metrics["replies"]["fine-tuned"]["replies"] == 2 and 0 <= metrics["replies"]["fine-tuned"]["chrf"] <= 100
    samples = json.loads(Path("reports/evaluate/generations.json").read_text())["samples"]["fine-tuned"]
    stopped = metrics["generation"]["fine-tuned"]["ended_at_stop_token"]
    assert stopped == sum(s["stopped"] for s in samples) / len(samples)
    assert samples and all(s["prompt"].endswith("<|im_start|>assistant\n") and s["reference"] in {r for _, r in PAIRS} | {
        f"{r} {c}" for _, r in PAIRS for c in range(6)} for s in samples)

    from finetune.families.generative import report

    section = report.generations_section(params)  # the report shows each reference beside both models' replies, and the scores
    assert "Replies to 2 held-out conversations" in section and "<th>reference</th>" in section
    assert all(f"<pre>{s['reference']}</pre>" in section for s in samples)
    assert f"{metrics['replies']['fine-tuned']['chrf']:.2f} [" in section
