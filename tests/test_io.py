import os

import pytest

from finetune.io import atomic_path, write_json


def test_failed_write_leaves_the_old_output_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert os.listdir(tmp_path) == ["out.json"]


def test_folder_appears_whole_and_stale_temporaries_are_removed(tmp_path):
    stale = tmp_path / ".model.tmp-99999"  # left by a kill -9
    stale.mkdir()
    with atomic_path(tmp_path / "model") as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("w")
        assert not (tmp_path / "model").exists()
    assert (tmp_path / "model/weights").read_text() == "w"
    assert sorted(os.listdir(tmp_path)) == ["model"]
