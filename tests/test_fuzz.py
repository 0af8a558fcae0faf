"""Property-based fuzzing (Hypothesis) of what users hand us: ingest, given random bytes and random CSV / TSV /
JSONL structures (quotes, newlines, NULs, huge fields, duplicate or empty headers, mixed encodings, BOMs) or a
causal LM's folder of documents (random names and bytes, hidden files, nested folders, links in and out, FIFOs),
and the params schema, given random values anywhere. Neither ever raises anything but a UserError (one clear
line from the CLI, no traceback), and a failed ingest leaves no output behind.

`make test` runs a few hundred examples; `HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py`
runs 10,000 per test (docs/reliability.md)."""
import os
import string

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune import paths
from finetune.config.params import parse_params
from finetune.errors import UserError
from stages import ingest
from tests.support.params import tiny_lm_params, tiny_params

settings.register_profile("default", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

TEXTS = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(['"', ",", "\t", "\n", "\r", "\x00", "\ufeff"]), max_size=40)
CELLS = st.one_of(TEXTS, st.sampled_from(["text", "label", "pos", "neg", ""]), st.just("x" * 200_000))
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"])


def _table(header: list[str], rows: list[list[str]], delimiter: str) -> str:
    def cell(value: str) -> str:
        return '"' + value.replace('"', '""') + '"' if any(c in value for c in f'"{delimiter}\n\r') else value
    return "\n".join(delimiter.join(cell(v) for v in row) for row in [header, *rows]) + "\n"


@st.composite
def delimited_files(draw) -> tuple[str, bytes]:
    delimiter, suffix = draw(st.sampled_from([(",", ".csv"), ("\t", ".tsv")]))
    header = draw(st.lists(st.sampled_from(["text", "label", "", "text", "other"]) | TEXTS, min_size=1, max_size=4))
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=5), max_size=8))
    text = _table(header, rows, delimiter) if draw(st.booleans()) else draw(TEXTS)  # well formed, or anything at all
    data = text.encode(draw(ENCODINGS), errors="replace")
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # cut anywhere
    return suffix, data


@st.composite
def jsonl_files(draw) -> tuple[str, bytes]:
    record = st.dictionaries(st.sampled_from(["text", "label", "other"]) | TEXTS, st.none() | st.booleans() | st.integers() | st.floats() | TEXTS
                             | st.lists(st.integers(), max_size=3), max_size=4)
    import json

    lines = draw(st.lists(st.one_of(record.map(json.dumps), TEXTS, st.just("[" * 5000)), max_size=8))
    return ".jsonl", "\n".join(lines).encode(draw(ENCODINGS), errors="replace")


def _ingest(workdir, suffix: str, data: bytes, on_bad_rows: str):
    (workdir / "data/raw").mkdir(parents=True, exist_ok=True)
    for stale in (paths.INGESTED, paths.QUARANTINE / "ingest.csv", paths.INGEST_SUMMARY):
        stale.unlink(missing_ok=True)
    (workdir / f"data/raw/f{suffix}").write_bytes(data)
    params = parse_params(tiny_params("models/pretrained/tiny", source=f"data/raw/f{suffix}", data={"on_bad_rows": on_bad_rows}))
    try:
        summary = ingest.run(params)
    except UserError as error:
        assert f"data/raw/f{suffix}" in str(error) or "data." in str(error), error  # names the file (or the params key)
        assert not paths.INGESTED.exists() and not paths.INGEST_SUMMARY.exists()  # nothing half-written
        return
    kept = pd.read_parquet(paths.INGESTED)
    quarantine = pd.read_csv(paths.QUARANTINE / "ingest.csv")
    assert len(kept) == summary["rows_kept"] and (quarantine["problem"].str.len() > 0).all()  # every refused row has its reason
    assert summary["rows_read"] == summary["rows_kept"] + sum(summary["dropped"].values())


@pytest.fixture
def fuzz_dir(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "models/pretrained/tiny").mkdir(parents=True)
    (root / "models/pretrained/tiny/config.json").write_text("{}")  # train.model must name a model directory
    monkeypatch.chdir(root)
    return root


@given(file=st.one_of(delimited_files(), jsonl_files()), on_bad_rows=st.sampled_from(["skip", "error"]))
def test_ingest_never_crashes_on_any_table(fuzz_dir, file, on_bad_rows):
    _ingest(fuzz_dir, *file, on_bad_rows)


@given(data=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet"]))
def test_ingest_never_crashes_on_random_bytes(fuzz_dir, data, suffix):
    _ingest(fuzz_dir, suffix, data, "skip")


NAMES = st.text(alphabet=string.ascii_letters + "._- ", min_size=1, max_size=8).filter(lambda name: name not in (".", ".."))
ENTRIES = st.tuples(st.lists(NAMES, min_size=1, max_size=3), st.sampled_from([".txt", ".txt", ".md", ""]),
                    st.one_of(st.binary(max_size=200), TEXTS.map(str.encode), st.sampled_from(["link-out", "link-in", "dangling", "fifo", "dir"])))


@given(entries=st.lists(ENTRIES, max_size=6), on_bad_rows=st.sampled_from(["skip", "error"]))
def test_causal_lm_ingest_never_crashes_on_any_folder(fuzz_dir, entries, on_bad_rows):
    import shutil

    corpus = fuzz_dir / "data/raw/corpus"
    shutil.rmtree(fuzz_dir / "data", ignore_errors=True)
    paths.INGEST_SUMMARY.unlink(missing_ok=True)
    corpus.mkdir(parents=True)
    for parts, suffix, content in entries:
        path = corpus.joinpath(*parts[:-1], parts[-1] + suffix)
        taken = [path, *(parent for parent in path.parents if corpus in parent.parents)]  # itself, or a parent as a non-folder
        if path.exists() or any(place.is_symlink() or (place.exists() and not place.is_dir()) for place in taken):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content == "fifo":
            os.mkfifo(path)
        elif content == "dir":
            path.mkdir()
        else:
            path.symlink_to({"link-out": "/etc/hostname", "link-in": fuzz_dir / "models/pretrained/tiny/config.json", "dangling": corpus / "gone"}[content])
    params = parse_params(tiny_lm_params("models/pretrained/tiny", data={"on_bad_rows": on_bad_rows}))
    try:
        summary = ingest.run(params)
    except UserError as error:
        assert "data/raw/corpus" in str(error) or "data." in str(error), error
        assert "line None" not in str(error)
        assert not paths.INGESTED.exists() and not paths.INGEST_SUMMARY.exists()
        return
    quarantine = pd.read_csv(paths.QUARANTINE / "ingest.csv")
    assert (quarantine["problem"].str.len() > 0).all()
    assert summary["rows_read"] == summary["rows_kept"] + sum(summary["dropped"].values())
    assert not pd.read_parquet(paths.INGESTED)["input"].str.contains(open("/etc/hostname").read().strip() or "\0", regex=False).any()


VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@given(section=st.sampled_from(["task", "data", "preprocess", "train", "evaluate", "ensemble", "compress", "explain", "search", "report", "zzz"]),
       key=st.text(string.ascii_lowercase + "_.", max_size=20), value=VALUES)
def test_params_never_crash_whatever_the_values(fuzz_dir, section, key, value):
    raw = tiny_params("models/pretrained/tiny", source="builtin:tweets")
    node = raw
    *parents, last = [section, *[k for k in key.split(".") if k]]
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node[last] = value
    try:
        parse_params(raw)
    except UserError as error:
        assert len(str(error)) < 4000  # a rejected value is echoed cut short, never whole
