from pathlib import Path

import pytest

from finetune.config.params import load_params, parse_params
from finetune.errors import UserError
from tests.support.params import placed, tiny_params
from tests.support.repos import PROJECT


@pytest.fixture(autouse=True)
def _in_a_scratch_project(workdir):
    """Paths in params are checked against the current directory's data/raw and models/pretrained."""


def _error(raw) -> str:
    with pytest.raises(UserError) as caught:
        parse_params(placed(raw, Path.cwd()))
    return str(caught.value)


def test_defaults_file_is_valid():
    params = load_params(PROJECT / "params.yaml")
    assert params.train.model == "builtin:minilm" and params.data.source == "builtin:tweets"


def test_misspelled_key_is_named_with_a_suggestion(tiny_model):
    raw = tiny_params(tiny_model)
    raw["train"]["learning_rte"] = 1e-3
    assert "train.learning_rte: unknown key; did you mean 'learning_rate'?" in _error(raw)


def test_speed_settings_are_checked_like_every_key(tiny_model):
    message = _error(tiny_params(tiny_model, train={"speed": {"tf23": True, "dataloader_workers": -1}}))
    assert "train.speed.tf23: unknown key; did you mean 'tf32'?" in message
    assert "train.speed.dataloader_workers: Input should be greater than or equal to 0 (got -1)" in message


def test_unknown_section_is_named(tiny_model):
    raw = tiny_params(tiny_model)
    raw["trian"] = {}
    assert "trian: unknown key; did you mean 'train'?" in _error(raw)


def test_wrong_type_and_range_name_the_key_and_the_value(tiny_model):
    message = _error(tiny_params(tiny_model, train={"batch_size": "big", "learning_rate": -1}))
    assert "train.batch_size: Input should be a valid integer" in message and "(got 'big')" in message
    assert "train.learning_rate: Input should be greater than 0 (got -1)" in message


def test_unknown_choice_lists_the_valid_ones(tiny_model):
    message = _error(tiny_params(tiny_model, train={"lr_scheduler": "cosine_annealing"}))
    assert "train.lr_scheduler: Input should be 'constant', 'constant_with_warmup', 'linear', 'cosine' or 'polynomial'" in message


def test_missing_paths_are_errors(tiny_model):
    assert ("train: Value error, 'models/pretrained/nowhere' is not a Hugging Face model directory"
            in _error(tiny_params("models/pretrained/nowhere")))
    assert "file 'data/raw/missing.csv' does not exist" in _error(tiny_params(tiny_model, source="data/raw/missing.csv"))
    assert "not a supported table" in _error(tiny_params(tiny_model, source="data/raw/data.xlsx"))
    assert "unknown builtin source 'builtin:imdb'" in _error(tiny_params(tiny_model, source="builtin:imdb"))


def test_inputs_outside_data_raw_and_models_pretrained_are_refused_links_included(tiny_model, workdir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "t.csv").write_text("text,label\nsecret line,a\n")
    (workdir / "data/raw").mkdir(parents=True)
    (workdir / "data/raw/t.csv").symlink_to(elsewhere / "t.csv")
    (workdir / "data/raw/passwd.csv").symlink_to("/etc/passwd")
    fix = "copy it into data/raw/ (a big one: `dvc add` it there, or `dvc import` it from its repository)"
    for source, shown in ((str(elsewhere / "t.csv"), str(elsewhere / "t.csv")), ("data/raw/../../t.csv", "data/raw/../../t.csv"),
                          ("data/raw/t.csv", f"data/raw/t.csv (a link to {elsewhere / 't.csv'})"),
                          ("data/raw/passwd.csv", "data/raw/passwd.csv (a link to /etc/passwd)")):
        message = _error(tiny_params(tiny_model, source=source))
        assert f"data: Value error, {shown} is outside data/raw/: only files there are DVC dependencies" in message and fix in message
        assert "secret" not in message and "root:" not in message  # nothing of the file is read or echoed
    (workdir / "models/pretrained").mkdir(parents=True, exist_ok=True)
    (workdir / "models/pretrained/tiny").symlink_to(tiny_model)
    for model in (str(tiny_model), "models/pretrained/tiny"):
        with pytest.raises(UserError, match="is outside models/pretrained/: only files there are DVC dependencies"):
            parse_params(tiny_params(model, source="data/raw/t.csv"))  # not placed: the model stays where it is
    (workdir / "data/raw/t.csv").unlink()
    (workdir / "data/raw/t.csv").write_text("text,label\nfine,a\n")
    assert parse_params(placed(tiny_params(tiny_model, source="data/raw/t.csv"), workdir)).data.source == "data/raw/t.csv"


def test_a_data_raw_that_is_itself_a_link_keeps_its_files_inside(tiny_model, workdir, tmp_path_factory):
    """data/raw as a link to a folder on a bigger disk (or a builtin's package folder in a virtualenv reached through a
    link, as the LM record's was): its files are inputs; a link from there to anywhere else is still refused."""
    disk = tmp_path_factory.mktemp("big_disk")
    (disk / "t.csv").write_text("text,label\nfine,a\n")
    (disk / "passwd.csv").symlink_to("/etc/passwd")
    (workdir / "data").mkdir()
    (workdir / "data/raw").symlink_to(disk, target_is_directory=True)
    assert parse_params(placed(tiny_params(tiny_model, source="data/raw/t.csv"), workdir)).data.source == "data/raw/t.csv"
    assert "data/raw/passwd.csv (a link to /etc/passwd) is outside data/raw/" in _error(tiny_params(tiny_model, source="data/raw/passwd.csv"))


def test_splits_must_sum_to_one(tiny_model, workdir):
    (workdir / "data/raw").mkdir(parents=True)
    (workdir / "data/raw/tiny.csv").write_text("text,label\n")
    message = _error(tiny_params(tiny_model, data={"splits": {"train": 0.8, "val": 0.3, "test": 0.1}}))
    assert "data.splits: Value error, train + val + test must sum to 1, got 1.2" in message


def test_unreadable_file_is_an_error(tmp_path):
    (tmp_path / "p.yaml").write_text("train: [unclosed")
    with pytest.raises(UserError, match="p.yaml is not valid YAML"):
        load_params(tmp_path / "p.yaml")
    with pytest.raises(UserError, match="nope.yaml not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize("search, expected", [
    ({"space": {"train.learning_rte": {"log_uniform": [1e-5, 1e-3]}}},
     "search.space.train.learning_rte: unknown param key; did you mean 'train.learning_rate'?"),
    ({"space": {"data.seed": {"choice": [1, 2]}}}, "search.space.data.seed: a search varies train.* or preprocess.* keys"),
    ({"space": {"train.learning_rate": {"uniform": [1e-3, 1e-4]}}}, "empty range [0.001, 0.0001]: low must be below high"),
    ({"space": {"train.learning_rate": {"choice": []}}}, "choice is empty"),
    ({"space": {"train.learning_rate": {"choice": [1e-4, 2.0]}}},
     "search.space.train.learning_rate: value 2.0 is invalid: train.learning_rate: Input should be less than 1"),
    ({"space": {"train.strategy": {"choice": ["full", "adapters"]}}}, "search.space.train.strategy: value 'adapters' is invalid"),
    ({"method": "grid", "space": {"train.learning_rate": {"log_uniform": [1e-5, 1e-3]}}},
     "grid search needs choice or integer axes; ['train.learning_rate'] are continuous"),
    ({"metric": "test_f1_macro"}, "metric 'test_f1_macro' is computed on test; a search selects on validation only"),
    ({"metric": "recall"}, "metric 'recall' is not a validation metric"),
])
def test_bad_search_settings_name_the_key(tiny_model, workdir, search, expected):
    (workdir / "data/raw").mkdir(parents=True)
    (workdir / "data/raw/tiny.csv").write_text("text,label\n")
    raw = tiny_params(tiny_model)
    raw["search"] = {"space": {"train.learning_rate": {"log_uniform": [1e-5, 1e-3]}}, **search}
    assert expected in _error(raw)


def test_nan_infinity_and_absurd_sizes_are_refused(tiny_model, workdir):
    (workdir / "data/raw").mkdir(parents=True)
    (workdir / "data/raw/tiny.csv").write_text("text,label\n")
    raw = tiny_params(tiny_model)
    raw["ensemble"]["weights"] = {"primary": float("nan"), "tfidf": 1.0}
    assert "ensemble.weights.primary: Input should be a finite number" in _error(raw)
    assert "train.learning_rate: Input should be a finite number" in _error(tiny_params(tiny_model, train={"learning_rate": float("inf")}))
    message = _error(tiny_params(tiny_model, train={"epochs": 1e9, "batch_size": 10**12}))
    assert "train.epochs: Input should be less than or equal to 10000" in message
    assert "train.batch_size: Input should be less than or equal to 65536" in message


def test_a_rejected_value_is_echoed_cut_short(tiny_model, workdir):
    (workdir / "data/raw").mkdir(parents=True)
    (workdir / "data/raw/tiny.csv").write_text("text,label\n")
    message = _error(tiny_params(tiny_model, report={"title": "x" * 100_000}))
    assert "report.title: String should have at most 200 characters (got 'xxxx" in message and "(100002 characters)" in message
    assert len(message) < 600


def test_yaml_aliases_and_other_encodings_are_refused_with_the_reason(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefg", "bcdefgh"))
    (tmp_path / "bomb.yaml").write_text(bomb + "report: {title: *h}\n")  # 9^8 = 43 million strings once expanded
    with pytest.raises(UserError, match=r"bomb.yaml is not valid YAML: line 2: YAML aliases \(\*name\) are not supported"):
        load_params(tmp_path / "bomb.yaml")
    (tmp_path / "latin.yaml").write_bytes("report: {title: caf\u00e9}\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin.yaml is not UTF-8 text \(byte 19: invalid continuation byte\); save it as UTF-8"):
        load_params(tmp_path / "latin.yaml")


def test_a_numeric_label_trains_with_mse_and_selects_on_rmse_unless_params_say_otherwise(tiny_model, workdir):
    Path("data/raw").mkdir(parents=True)
    Path("data/raw/tiny.csv").write_text("text,label\na,1\n")
    raw = tiny_params(tiny_model, data={"label_type": "number"})
    del raw["search"]["metric"], raw["train"]["early_stopping"]["metric"]  # tiny params spell out no train.loss
    params = parse_params(placed(raw, Path.cwd()))
    assert (params.train.loss, params.train.early_stopping.metric, params.search.metric) == ("mse", "rmse", "rmse")
    raw["train"] |= {"loss": "huber", "early_stopping": {"metric": "spearman"}}
    assert parse_params(placed(raw, Path.cwd())).train.early_stopping.metric == "spearman"
    assert "train.loss cross_entropy: data.label_type number trains with a regression loss: mse, huber or mae" in _error(
        tiny_params(tiny_model, data={"label_type": "number"}, train={"loss": "cross_entropy", "early_stopping": {"metric": "rmse"}},
                    search={"metric": "rmse"}))
    assert "train.loss mae is for numeric labels: set data.label_type number" in _error(tiny_params(tiny_model, train={"loss": "mae"}))
    assert "train.early_stopping.metric 'f1_macro': the text-classification task scores ['rmse', 'mae', 'r2', 'spearman', 'loss']" in _error(
        tiny_params(tiny_model, data={"label_type": "number"}, train={"loss": "mse"}))
    assert "label_type number predicts one numeric label column" in _error(
        tiny_params(tiny_model, data={"label_type": "number", "label_columns": ["a", "b"]}, train={"loss": "mse"}))
    assert "train.class_weights, train.balance and train.label_smoothing are for classes" in _error(tiny_params(
        tiny_model, data={"label_type": "number"}, train={"loss": "mse", "balance": "oversample", "early_stopping": {"metric": "rmse"}},
        search={"metric": "rmse"}))


def test_check_every_with_a_policy_that_decides_at_evaluations_is_refused(tiny_model):
    message = _error(tiny_params(tiny_model, train={"strategy": "adaptive", "adaptive": {"check_every": 50}}))
    assert "train.adaptive: Value error, check_every: 50 sets how often freeze_converged decides; policy unfreeze_on_plateau" in message
    message = _error(tiny_params(tiny_model, train={"strategy": "adaptive", "adaptive": {"max_frozen": 0.5}}))
    assert "max_frozen: 0.5 limits how deep freeze_converged freezes; policy unfreeze_on_plateau never freezes" in message
