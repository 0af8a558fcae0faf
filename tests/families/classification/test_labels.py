"""Labels are data (issue 40): every classifier task runs ingest -> report on tiny data whose labels are ints, numeric
strings, zero-padded strings ('007' and '7': two classes), booleans, or words with spaces, unicode and pandas' missing-
value spellings ('N/A', 'None'); several heads too. Every stage must show the classes by their names, and predict and
serve must answer in the data's own kind: 7 where the JSONL held 7, true where it held true (finetune/data/labels.py).
The explain stage crashed with `np.int64(9) is not in list` on builtin:digits before the codec (predictions re-read as
integers). A column mixing kinds is refused at ingest (tests/data/test_labels.py)."""
import html
import json

import pandas as pd
import pytest

import stages.member
from finetune import inference, paths
from finetune.data.labels import read_labelled_csv
from tests.support.data import make_images, make_rows, write_vqa_table
from tests.support.params import image_text_params, load, place, run_stages, tiny_image_params, tiny_params
from tests.support.predicting import b64, served

LABEL_SETS = {  # what the data file holds for the generator's 1st, 2nd, 3rd class, and the file's format
    "ints": ([3, 10, 200], ".jsonl"),
    "numeric strings": (["1", "2", "10"], ".csv"),
    "zero-padded": (["007", "7", "10"], ".csv"),
    "booleans": ([True, False], ".jsonl"),
    "words": (["très bien", "N/A", "None"], ".csv"),
}
NAMES = {  # label_map's classes: numbers in numeric order ('007' == '7' numerically: the sorted texts' order kept)
    "ints": ["3", "10", "200"], "numeric strings": ["1", "2", "10"], "zero-padded": ["007", "7", "10"],
    "booleans": ["False", "True"], "words": ["N/A", "None", "très bien"],
}
KINDS = {"ints": "integer", "numeric strings": "text", "zero-padded": "text", "booleans": "boolean", "words": "text"}


def _write(rows: list[dict], path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    else:
        pd.DataFrame(rows).to_csv(path, index=False)


def _relabelled(rows: list[dict], classes: list[str], values: list, column: str = "label") -> list[dict]:
    """The generator's rows with its classes replaced by `values` (rows of a class without a value dropped)."""
    value_of = dict(zip(classes, values))
    return [{**row, column: value_of[row[column]]} for row in rows if row[column] in value_of]


def _text_params(models, source: str):
    params = tiny_params(models["text"], source=source, train={"epochs": 3}, compress={"methods": ["int8"]},
                         explain={"examples": 3, "ig_steps": 4, "random_draws": 1, "faithfulness_k": 2})
    params["ensemble"]["members"] = {"tfidf": {"kind": "tfidf"}}
    new = [{"text": "the flight was great"}, {"text": "awful service"}]
    return params, new, new


def _text(workdir, models, values, suffix):
    _write(_relabelled(make_rows(90).to_dict("records"), ["negative", "neutral", "positive"], values), workdir / f"data/raw/tiny{suffix}")
    return _text_params(models, f"data/raw/tiny{suffix}")


def _heads(workdir, models, values, suffix):
    """Two heads: `kind` holds the label set under test, `mood` words."""
    moods = {"negative": "pas bien", "neutral": "N/A", "positive": "très bien"}
    rows = [{"text": row["text"], "kind": row["label"], "mood": moods[row["label"]]} for row in make_rows(90).to_dict("records")]
    _write(_relabelled(rows, list(moods), values, "kind"), workdir / f"data/raw/tiny{suffix}")
    params, new, to_serve = _text_params(models, f"data/raw/tiny{suffix}")
    params["data"]["label_columns"] = ["kind", "mood"]
    return params, new, to_serve


def _image(workdir, models, values, suffix):
    folder = workdir / "data/raw/images"
    folder.mkdir(parents=True)
    rows = []
    for i, (colour, image) in enumerate(make_images(12, size=16)):
        image.save(folder / f"{i}.png")
        rows.append({"image": f"{i}.png", "label": colour})
    _write(_relabelled(rows, ["red", "green", "blue"], values), folder / f"list{suffix}")
    params = tiny_image_params(models["image"], source=f"data/raw/images/list{suffix}", train={"epochs": 2},
                               compress={"methods": ["int8"]}, explain={"examples": 3, "ig_steps": 4, "random_draws": 1, "faithfulness_k": 2})
    params["ensemble"]["members"] = {"pixels": {"kind": "pixels", "pixels": {"size": 8, "C": 1.0}}}
    return params, [{"image": str(folder / "0.png")}], [{"image": b64(folder / "0.png")}]


def _image_text(workdir, models, values, suffix):
    table = write_vqa_table(workdir, n_per_class=8)
    rows = pd.read_csv(table).to_dict("records")
    table.unlink()
    _write(_relabelled(rows, ["yes", "no"], values), table.with_suffix(suffix))
    params = image_text_params(models["image"], models["text"], train={"epochs": 2}, data={"source": f"data/raw/vqa/pairs{suffix}"})
    params["ensemble"]["members"]["text_only"]["train"]["epochs"] = 1
    image, question = table.parent / "images/0.png", "is there a red square?"
    return place(params, workdir), [{"image": str(image), "text": question}], [{"image": b64(image), "text": question}]


TASKS = {"text": (_text, True), "two heads": (_heads, True), "image": (_image, True), "image-text": (_image_text, False)}


@pytest.fixture
def models(tiny_model, tiny_image_model):
    return {"text": tiny_model, "image": tiny_image_model}


@pytest.mark.parametrize("label_set", LABEL_SETS)
@pytest.mark.parametrize("task", TASKS)
def test_every_kind_of_label_survives_every_stage_and_predict_answers_in_its_kind(workdir, models, task, label_set):
    make, explains = TASKS[task]
    values, suffix = LABEL_SETS[label_set]
    if task == "image-text":
        values = values[:2]
    params, new_rows, to_serve = make(workdir, models, values, suffix)
    params = load(params)
    run_stages("ingest", "preprocess", "train", "evaluate", params=params)
    for member in params.ensemble.members:
        stages.member.run(params, member)
    run_stages("ensemble", "compress", *(["explain"] if explains else []), "report", params=params)

    head = "kind" if task == "two heads" else None
    names = [name for name in NAMES[label_set] if name in {str(v) for v in values}]
    label_map = json.loads(paths.LABEL_MAP.read_text())
    assert (label_map["heads"]["kind"] if head else label_map["labels"]) == names
    assert label_map["kinds"][head or "label"] == KINDS[label_set]
    metrics = json.loads(paths.METRICS.read_text())
    assert set((metrics["heads"][head] if head else metrics)["per_class"]) == set(names)
    folder = paths.EVALUATION / (head or "")
    for table in ("predictions.csv", "misclassified.csv"):
        written = read_labelled_csv(folder / table)
        assert set(written["actual"]) <= set(names) and set(written["predicted"]) <= set(names), table
    assert set(read_labelled_csv(folder / "predictions.csv")["actual"]) == set(names)
    if explains:
        explained = json.loads((paths.EXPLAIN / "attributions.json").read_text())
        examples = (explained["heads"][head] if head else explained)["examples"]
        assert examples and {e["predicted"] for e in examples} | {e["actual"] for e in examples} <= set(names)
    page = paths.REPORT_HTML.read_text(encoding="utf-8")
    assert all(html.escape(name) in page for name in names)

    # predict and serve answer with the data's own values: 3 (not "3"), True (not "True"), "007" (not 7)
    _write(new_rows, workdir / "new.jsonl")
    inference.predict_file(paths.MODEL, workdir / "new.jsonl", workdir / "out.jsonl")
    answered = [json.loads(line)[head or "label"] for line in (workdir / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert answered and all(any(a == v and type(a) is type(v) for v in values) for a in answered), answered
    assert [row[head or "label"] for row in served(inference.load(paths.MODEL), to_serve)["predictions"]] == answered
