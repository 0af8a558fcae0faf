"""The causal-LM task's data and preprocess: documents read, split by document, packed into blocks; bad input refused."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finetune.errors import UserError
from finetune.tasks import get_task
from tests.support.data import LM_TEXT, write_lm_corpus
from tests.support.params import load, run_stages, tiny_lm_params

TASK = get_task("causal-lm")


def _prepare(tiny_causal_lm, documents: int = 6, **sections):
    write_lm_corpus(Path.cwd(), documents=documents)
    params = load(tiny_lm_params(tiny_causal_lm, **sections))
    run_stages("ingest", "preprocess", params=params)
    return params


def test_builtin_shakespeare_is_the_37_plays_one_document_each():
    source = TASK.read(TASK.sections["data"]())
    plays = set(source.frame["label"])
    assert len(plays) == 37 and {"hamlet", "macbeth", "pericles"} <= plays
    assert not plays & {"sonnets", "rape_of_lucrece"}  # the poems are left out
    assert source.frame["input"].str.len().min() > 50_000 and not source.bad


def test_blocks_are_packed_per_split_with_eos_between_documents(workdir, tiny_causal_lm):
    params = _prepare(tiny_causal_lm)
    tokenizer = TASK.models.load_processor(str(tiny_causal_lm), False)
    eos, size = tokenizer.eos_token_id, params.preprocess.block_size
    summary = json.loads(Path("reports/preprocess.json").read_text())
    documents = {name: set(summary["documents"][name]) for name in ("train", "val", "test")}
    assert not (documents["train"] & documents["val"]) and not (documents["train"] & documents["test"])  # no document in two splits
    ingested = pd.read_parquet("data/ingested.parquet").set_index("label")["input"]
    for split, names in documents.items():
        table = pd.read_parquet(f"data/prepared/{split}.parquet")
        stream = [t for name in sorted(names, key=lambda n: int(n.removeprefix("doc").removesuffix(".txt")))
                  for t in [*tokenizer(ingested[name].strip("\n"), add_special_tokens=False)["input_ids"], eos]]
        expected = np.asarray(stream[: len(stream) // size * size]).reshape(-1, size)
        # every block is exactly the split's own documents, in order, each followed by EOS: nothing from another split
        np.testing.assert_array_equal(np.stack(table["input_ids"].to_numpy()), expected[table["id"].to_numpy()])
        assert summary["splits"][split]["blocks"] == len(expected)
        assert summary["splits"][split]["tokens"] == len(stream)
    assert (np.stack(pd.read_parquet("data/prepared/train.parquet")["input_ids"].to_numpy()) == eos).sum() >= 1


def test_max_blocks_keeps_a_seeded_sample_in_order(workdir, tiny_causal_lm):
    _prepare(tiny_causal_lm, preprocess={"max_blocks": {"train": 5}})
    first = pd.read_parquet("data/prepared/train.parquet")
    assert len(first) == 5 and first["id"].is_monotonic_increasing
    run_stages("preprocess", params=load(tiny_lm_params(tiny_causal_lm, preprocess={"max_blocks": {"train": 5}})))
    assert pd.read_parquet("data/prepared/train.parquet")["id"].tolist() == first["id"].tolist()


def test_a_table_column_is_one_document_per_row_with_its_own_split(workdir, tiny_causal_lm):
    texts = [f"to be or not to be {i} " * 20 for i in range(6)]
    Path("data/raw").mkdir(parents=True)
    pd.DataFrame({"body": texts, "part": ["train", "train", "train", "train", "val", "test"], "title": list("abcdef")}).to_csv(
        "data/raw/docs.csv", index=False)
    params = load(tiny_lm_params(tiny_causal_lm, data={"source": "data/raw/docs.csv", "text_column": "body", "split_column": "part",
                                                       "label_column": "title"}))
    run_stages("ingest", "preprocess", params=params)
    summary = json.loads(Path("reports/preprocess.json").read_text())
    assert summary["documents"] == {"train": ["a", "b", "c", "d"], "val": ["e"], "test": ["f"]}


@pytest.mark.parametrize("case, message", [
    ("empty", "the corpus is empty"),
    ("small", "fewer than one block of preprocess.block_size 128"),
    ("too_long", "preprocess.block_size 256 is longer than the context of models/pretrained/tiny-llama (128 tokens)"),
    ("prompt", "evaluate.prompts[1] 'to be or not to be that is the question whether tis nobler i' is 95 tokens; with "
               "evaluate.max_new_tokens 40 it must fit the context of models/pretrained/tiny-llama (128 tokens)"),
])
def test_bad_corpora_are_refused_naming_the_key(workdir, tiny_causal_lm, case, message):
    folder = write_lm_corpus(Path.cwd(), documents=3, words=40)
    sections = {}
    if case == "empty":
        for path in folder.iterdir():
            path.write_text("  \n\n")
    elif case == "small":
        sections = {"preprocess": {"block_size": 128}}
    elif case == "too_long":
        sections = {"preprocess": {"block_size": 256}}
    else:  # the evaluate stage would generate from it: refused before any training
        sections = {"preprocess": {"block_size": 16}, "evaluate": {"prompts": ["to be", LM_TEXT], "max_new_tokens": 40}}
    params = load(tiny_lm_params(tiny_causal_lm, **sections))
    run_stages("ingest", params=params)
    with pytest.raises(UserError, match=re.escape(message)):
        run_stages("preprocess", params=params)
    assert not Path("data/prepared").exists()  # nothing half-written


def test_a_model_without_a_causal_lm_head_is_refused(workdir, tiny_model, tiny_causal_lm):
    write_lm_corpus(Path.cwd())
    with pytest.raises(UserError, match="is a BertModel, not a causal language model"):
        load(tiny_lm_params(tiny_model))


def test_a_tokenizer_without_eos_is_refused_before_training(workdir, tiny_causal_lm):
    model = Path("models/pretrained/no-eos")
    shutil.copytree(tiny_causal_lm, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["eos_token"] = None
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    write_lm_corpus(Path.cwd())
    params = load(tiny_lm_params(model))
    run_stages("ingest", params=params)
    with pytest.raises(UserError, match="has no EOS token"):
        run_stages("preprocess", params=params)


def test_a_folder_file_that_is_not_utf8_is_a_bad_row_naming_the_file(workdir, tiny_causal_lm):
    folder = write_lm_corpus(Path.cwd())
    (folder / "broken.txt").write_bytes(b"caf\xe9 " * 50)
    with pytest.raises(UserError, match=r"broken.txt is not UTF-8 text"):
        run_stages("ingest", params=load(tiny_lm_params(tiny_causal_lm)))
    run_stages("ingest", params=load(tiny_lm_params(tiny_causal_lm, data={"on_bad_rows": "skip"})))
    assert "broken.txt" in Path("data/quarantine/ingest.csv").read_text()


def test_members_cannot_repack_the_shared_blocks(workdir, tiny_causal_lm):
    write_lm_corpus(Path.cwd())
    with pytest.raises(UserError, match="preprocess.block_size applies once"):
        load(tiny_lm_params(tiny_causal_lm, ensemble={"members": {"seed1": {"kind": "finetune", "preprocess": {"block_size": 16}}}}))


def test_accumulation_and_checkpointing_reach_the_trainer(workdir, tiny_causal_lm):
    params = _prepare(tiny_causal_lm, train={"epochs": 1, "batch_size": 2, "gradient_accumulation_steps": 2, "gradient_checkpointing": True})
    run_stages("train", params=params)
    recorded = json.loads(Path("models/model/training_args.json").read_text())
    assert recorded["gradient_accumulation_steps"] == 2 and recorded["activation_checkpointing"] is True
    blocks = len(pd.read_parquet("data/prepared/train.parquet"))
    assert json.loads(Path("reports/train.json").read_text())["steps"] == -(-blocks // 2) // 2  # optimizer steps: 2 batches each


@pytest.mark.parametrize("strategy, trained", [("linear_probe", {"lm_head", "model.norm", "model.embed_tokens"}), ("lora", {"lora_"})])
def test_strategies_train_what_they_say_on_a_causal_lm(tiny_causal_lm, strategy, trained):
    from finetune.config.sections import Train
    from finetune.training.strategies import apply_strategy

    train = Train.model_construct(model=str(tiny_causal_lm), strategy=strategy)  # a model outside a project: not validated
    model = apply_strategy(TASK.models.load_model(str(tiny_causal_lm), {}, train), train)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert names and all(any(part in name for part in trained) for name in names)
    if strategy == "linear_probe":  # the LM head only, which is the tied token-embedding matrix: it trains
        assert model.get_output_embeddings().weight.requires_grad and not model.model.layers[0].mlp.up_proj.weight.requires_grad
    if strategy == "lora":  # adapters only: the tied LM head / embeddings stay as they are
        assert not any("embed_tokens" in name or "lm_head" in name for name in names)


def test_a_folder_of_documents_reads_only_regular_files_inside_data_raw(workdir, tiny_causal_lm, tmp_path_factory, monkeypatch):
    """Links out of data/raw (a system file, a secret beside the project), a FIFO (it would block the read forever), a
    link to /dev/zero (it would never end) and a file over the size limit are bad rows naming the reason; the secret's
    text never reaches data/ingested.parquet (which `make push` uploads). Before the fix, /etc/hostname and the secret
    were read as documents and the FIFO hung ingest."""
    import os

    from finetune.data import files

    corpus = write_lm_corpus(workdir)
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.txt"
    secret.write_text("password=hunter2\n")
    (corpus / "hostname.txt").symlink_to("/etc/hostname")
    (corpus / "secret.txt").symlink_to(secret)
    (corpus / "zero.txt").symlink_to("/dev/zero")
    os.mkfifo(corpus / "pipe.txt")
    (corpus / "big.txt").write_text("word " * 1000)
    monkeypatch.setattr(files, "MAX_INPUT_BYTES", 4000)  # the big file is 5,000 bytes: over this limit
    run_stages("ingest", params=load(tiny_lm_params(tiny_causal_lm, data={"on_bad_rows": "skip"})))
    ingested = pd.read_parquet("data/ingested.parquet")
    assert sorted(ingested["label"]) == [f"doc{i}.txt" for i in range(6)]
    assert not ingested["input"].str.contains("hunter2").any()
    quarantined = pd.read_csv("data/quarantine/ingest.csv")
    problems = dict(zip(quarantined["content"].map(lambda path: Path(path).name), quarantined["problem"]))
    assert "is outside data/raw/" in problems["hostname.txt"] and "is outside data/raw/" in problems["secret.txt"]
    assert "is outside data/raw/" in problems["zero.txt"]  # /dev/zero: outside first; never opened
    assert "is not a regular file" in problems["pipe.txt"]
    assert "one input file may hold at most 4,000" in problems["big.txt"]
