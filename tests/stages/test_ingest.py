import json
import subprocess
import sys

import pandas as pd
import pytest

from finetune.data import tables
from finetune.errors import UserError
from stages import ingest
from tests.support.data import make_rows
from tests.support.params import load, tiny_params, write_params
from tests.support.repos import PROJECT, tool_env


def _write(workdir, name: str, data: bytes | str) -> str:
    path = workdir / "data" / "raw" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return f"data/raw/{name}"


def _params(tiny_model, source, **data):
    return load(tiny_params(tiny_model, source=source, data=data))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_gives_the_same_normalised_table(workdir, tiny_model, suffix):
    rows = make_rows(30).rename(columns={"text": "review", "label": "stars"})
    rows["stars"] = rows["stars"].map({"negative": 1, "neutral": 2, "positive": 3})  # int labels
    path = workdir / "data" / "raw" / f"t{suffix}"
    path.parent.mkdir(parents=True)
    {".csv": lambda: rows.to_csv(path, index=False), ".tsv": lambda: rows.to_csv(path, sep="\t", index=False),
     ".jsonl": lambda: rows.to_json(path, orient="records", lines=True), ".parquet": lambda: rows.to_parquet(path)}[suffix]()

    summary = ingest.run(_params(tiny_model, f"data/raw/t{suffix}", text_column="review", label_column="stars"))

    table = pd.read_parquet("data/ingested.parquet")
    assert table["input"].tolist() == rows["review"].tolist()
    assert table["label"].tolist() == rows["stars"].astype(str).tolist()
    assert table["source_row"].tolist() == list(range(1, 31))
    assert summary["rows_kept"] == 30 and summary["dropped"] == {}


def test_missing_column_names_the_key_and_the_columns_found(workdir, tiny_model):
    source = _write(workdir, "a.csv", "sentence,label\nhello,pos\n")
    with pytest.raises(UserError, match=r"a.csv: missing column\(s\) text_column = 'text'; columns found: sentence, label"):
        ingest.run(_params(tiny_model, source))
    assert not (workdir / "data/ingested.parquet").exists()


def test_empty_file_is_an_error(workdir, tiny_model):
    source = _write(workdir, "empty.csv", "")
    with pytest.raises(UserError, match="empty.csv: the file is empty"):
        ingest.run(_params(tiny_model, source))


def test_non_utf8_row_is_named_by_row_and_line(workdir, tiny_model):
    source = _write(workdir, "bad.csv", b'text,label\ngood one,pos\n"two\nlines",neg\nbroken \xff byte,pos\n')
    with pytest.raises(UserError, match=r"bad.csv row 3 \(line 5\): holds bytes that are not valid UTF-8; 1 bad row"):
        ingest.run(_params(tiny_model, source))
    assert not (workdir / "data/ingested.parquet").exists()


def test_skip_quarantines_bad_rows_and_counts_them(workdir, tiny_model):
    source = _write(workdir, "bad.csv", b"text,label\nok,pos\nbroken \xff,neg\ntoo,many,fields\nfine,\nalso ok,neg\n")
    summary = ingest.run(_params(tiny_model, source, on_bad_rows="skip"))

    assert pd.read_parquet("data/ingested.parquet")["input"].tolist() == ["ok", "also ok"]
    quarantine = pd.read_csv("data/quarantine/ingest.csv")
    assert quarantine["source_row"].tolist() == [2, 3, 4]
    assert quarantine["problem"].tolist() == ["holds bytes that are not valid UTF-8", "expected 2 fields, found 3", "empty label"]
    assert quarantine["content"][0] == "broken \\xff,neg"  # the bad byte is visible, the file stays UTF-8
    assert summary["dropped"] == {"bad row: holds bytes that are not valid UTF-8": 1, "bad row: expected 2 fields, found 3": 1,
                                  "bad row: empty label": 1}
    assert json.loads((workdir / "reports/ingest.json").read_text())["rows_read"] == 5


def test_no_row_left_names_the_commonest_reasons_only(workdir, tiny_model):
    source = _write(workdir, "bad.csv", "text,label\na,b,c\nd,e,f,g\nh,i,j,k,l\nm,n,o,p,q,r\ns,t,u,v,w,x,y\nz,\nzz,\n")
    with pytest.raises(UserError) as error:
        ingest.run(_params(tiny_model, source, on_bad_rows="skip"))
    assert str(error.value) == ("data/raw/bad.csv: no rows left after filtering: 2 x bad row: empty label; 1 x bad row: expected 2 "
                                "fields, found 3; 1 x bad row: expected 2 fields, found 4; and 3 more reason(s)")
    assert not (workdir / "data/ingested.parquet").exists()


def test_max_rows_is_a_seeded_stratified_sample(workdir, tiny_model):
    rows = pd.concat([make_rows(300, labels=("negative",)), make_rows(100, seed=1, labels=("positive",))])
    params = _params(tiny_model, _write(workdir, "big.csv", rows.to_csv(index=False)), max_rows=40)
    ingest.run(params)
    first = pd.read_parquet("data/ingested.parquet")
    ingest.run(params)
    assert first.equals(pd.read_parquet("data/ingested.parquet"))
    assert first["label"].value_counts().to_dict() == {"negative": 30, "positive": 10}


def test_label_and_confidence_filters(workdir, tiny_model):
    source = _write(workdir, "c.csv", "text,label,conf\na,x,0.9\nb,y,0.2\nc,y,\nd,z,0.95\ne,y,0.7\n")
    summary = ingest.run(_params(tiny_model, source, keep_labels=["x", "y"], confidence_column="conf", min_confidence=0.5))
    assert pd.read_parquet("data/ingested.parquet")["input"].tolist() == ["a", "e"]
    assert summary["dropped"] == {"confidence below 0.5 or missing": 2, "label not in keep_labels": 1}
    with pytest.raises(UserError, match=r"data.keep_labels: \['w'\] not found"):
        ingest.run(_params(tiny_model, source, keep_labels=["x", "w"]))


def test_builtin_tweets_are_read_with_their_broken_rows_quarantined(workdir, tiny_model):
    summary = ingest.run(_params(tiny_model, "builtin:tweets", on_bad_rows="skip", min_confidence=0.6, max_rows=300))
    assert summary["rows_read"] == 38158
    assert summary["dropped"]["bad row: holds bytes that are not valid UTF-8"] == 4934
    assert sum(summary["labels"].values()) == 300
    assert set(summary["labels"]) == {"negative", "neutral", "positive"}
    assert len(pd.read_csv("data/quarantine/ingest.csv")) == 4934


def test_cli_reports_bad_data_in_one_line_and_exits_non_zero(tmp_path, tiny_model):
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/x.csv").write_text("words,label\nhi,a\n")
    write_params(tmp_path, tiny_params(tiny_model, source="data/raw/x.csv"))
    env = tool_env()
    env["PYTHONPATH"] = str(PROJECT)
    done = subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == ("error: data/raw/x.csv: missing column(s) text_column = 'text'; "
                                   "columns found: words, label")
    helped = subprocess.run([sys.executable, "-m", "stages.ingest", "--help"], cwd=PROJECT, env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "ingest: read `data.source`" in helped.stdout


def test_builtin_chinese_reviews(workdir, tiny_model):
    summary = ingest.run(_params(tiny_model, "builtin:zh-reviews", max_rows=200))
    assert summary["rows_read"] == 16548 + 18576  # pos.txt + neg.txt lines
    assert summary["labels"] == {"negative": 106, "positive": 94}  # stratified: the files' own balance
    texts = pd.read_parquet("data/ingested.parquet")["input"]
    assert texts.str.contains(r"[\u4e00-\u9fff]").mean() > 0.9


def test_a_huge_field_is_read_whole_and_a_repeated_header_is_named(workdir, tiny_model, monkeypatch):
    long = "word " * 40_000  # 200 kB in one field: Python's csv module refuses over 128 KiB by default
    ingest.run(_params(tiny_model, _write(workdir, "long.csv", f'text,label\n"{long}",pos\nshort,neg\n')))
    assert pd.read_parquet("data/ingested.parquet")["input"].tolist() == [long, "short"]
    with pytest.raises(UserError, match=r"dup.csv line 1: the header names column\(s\) \['text'\] more than once; rename them"):
        ingest.run(_params(tiny_model, _write(workdir, "dup.csv", "text,label,text\na,b,c\n")))
    monkeypatch.setattr(tables, "MAX_FIELD", 300_000)  # instead of writing 256 MiB
    unclosed = '"' + "x" * 400_000  # an unclosed quote swallowing the rest of the file
    with pytest.raises(UserError, match=r"unclosed.csv: not a readable CSV file \(field larger than field limit"):
        ingest.run(_params(tiny_model, _write(workdir, "unclosed.csv", "text,label\n" + unclosed)))
