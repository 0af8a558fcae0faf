"""The label codec (finetune/data/labels.py): a column's kind is read from its values, a mixture is refused naming a row
of each kind, names and values round-trip for every kind, and our own CSVs read back as the names written. The whole
pipeline on each kind of label: tests/families/classification/test_labels.py."""
import json

import numpy as np
import pandas as pd
import pytest

from finetune.data import labels
from finetune.data.tables import read_table
from finetune.errors import UserError
from stages import ingest
from tests.support.data import make_rows
from tests.support.params import load, tiny_params


@pytest.mark.parametrize("cells, kind", [
    ([3, 10, None, 200], labels.INTEGER),
    ([1.0, 2.0, float("nan")], labels.INTEGER),  # a Parquet int column with a gap is read as floats
    ([1, 2.5], labels.NUMBER),
    ([True, np.bool_(False)], labels.BOOLEAN),
    (["007", "7", "N/A"], labels.TEXT),
    ([None, None], labels.TEXT),
])
def test_a_columns_kind_comes_from_its_values(cells, kind):
    assert labels.kind_of(cells, range(1, len(cells) + 1), "label", "t.jsonl") == kind


@pytest.mark.parametrize("cells, shown", [
    ([7, "7"], r"numbers \(row 1: 7\); texts \(row 2: \"7\"\)"),
    (["other", 1, 2], r"texts \(row 1: \"other\"\); numbers \(row 2: 1\)"),
    ([1, True], r"numbers \(row 1: 1\); booleans \(row 2: true\)"),
])
def test_a_column_mixing_kinds_is_refused_naming_a_row_of_each(tmp_path, cells, shown):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i}", "label": cell}) + "\n" for i, cell in enumerate(cells)))
    with pytest.raises(UserError, match=rf"t.jsonl: column 'label' mixes {shown}; a label column holds one kind"):
        read_table(path, {"text_column": "text", "label_column": "label"}, labels=("label",))


@pytest.mark.parametrize("values, kind", [
    ([3, 10, -2, 12345678901234567891], labels.INTEGER),
    ([0.5, 2.25, -1.0], labels.NUMBER),
    ([True, False], labels.BOOLEAN),
    (["007", "7", "N/A", "None", "très bien", " spaced "], labels.TEXT),
])
def test_names_and_values_round_trip_for_every_kind(values, kind):
    names = [labels.name(value) for value in values]
    assert labels.values(names, kind) == values
    assert all(type(back) is type(value) for back, value in zip(labels.values(names, kind), values))
    assert [labels.name(value) for value in labels.values(names, kind)] == names


def test_jsonl_labels_keep_their_values_whole(tmp_path):
    """A JSONL column of ints with a gap stays ints (pandas would make them floats and round 20-digit ids)."""
    path = tmp_path / "t.jsonl"
    rows = [{"text": "a", "label": 12345678901234567891}, {"text": "b"}, {"text": "c", "label": 7}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    frame, bad, kinds = read_table(path, {"text_column": "text", "label_column": "label"}, labels=("label",))
    assert frame["label"][[0, 2]].tolist() == ["12345678901234567891", "7"] and pd.isna(frame["label"][1]) and not bad
    assert kinds == {"label": labels.INTEGER}


def test_our_csvs_read_back_as_the_names_written(tmp_path):
    frame = pd.DataFrame({"id": [0, 1, 2], "actual": ["007", "N/A", "None"], "predicted": ["7", "NA", "null"],
                          "member_predicted": ["1.0", "", "TRUE"], "prob_007": [0.25, 0.5, 1.0], "text": ["NA", "x", "y"]})
    frame.to_csv(tmp_path / "p.csv", index=False)
    back = labels.read_labelled_csv(tmp_path / "p.csv")
    assert back["actual"].tolist() == ["007", "N/A", "None"] and back["predicted"].tolist() == ["7", "NA", "null"]
    assert back["member_predicted"].tolist() == ["1.0", "", "TRUE"]
    assert back["id"].tolist() == [0, 1, 2] and back["prob_007"].tolist() == [0.25, 0.5, 1.0]


def test_ingest_records_the_kind_and_keep_labels_takes_the_datas_values(workdir, tiny_model):
    path = workdir / "data/raw/t.jsonl"
    path.parent.mkdir(parents=True)
    values = {"negative": 3, "neutral": 10, "positive": 200}
    path.write_text("".join(json.dumps({"text": row["text"], "label": values[row["label"]]}) + "\n" for row in make_rows(30).to_dict("records")))
    summary = ingest.run(load(tiny_params(tiny_model, source="data/raw/t.jsonl", data={"keep_labels": [3, 200]})))
    assert summary["labels"] == {"200": 10, "3": 10} and summary["dropped"] == {"label not in keep_labels": 10}
    assert labels.read_kinds(workdir / "data/ingested.parquet") == {"label": labels.INTEGER}
    with pytest.raises(UserError, match=r"data.keep_labels: \['4'\] not found"):
        ingest.run(load(tiny_params(tiny_model, source="data/raw/t.jsonl", data={"keep_labels": [3, 4]})))
