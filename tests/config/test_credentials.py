"""Credentials never enter params.yaml (git-tracked, shown in the report) and are masked wherever a URL is printed
(issue 37 item 3): the old masking missed a password holding `/` and passwords in the query string."""
import os

import pytest

from finetune.config.sections import masked_url, url_secrets
from finetune.errors import UserError
from tests.support.params import load, tiny_params

TRICKY = [
    ("postgresql://ann:s3/cr@t@db:5432/search", "postgresql://ann:***@db:5432/search"),  # `/` and `@` in the password
    ("mysql+pymysql://ann:pw@db/search?charset=utf8&password=hunter2", "mysql+pymysql://ann:***@db/search?charset=utf8&password=***"),
    ("postgresql://db/search?user=ann&PASSWORD=hunter2&sslkey=/k", "postgresql://db/search?user=ann&PASSWORD=***&sslkey=***"),
    ("postgresql://ann@db/search", "postgresql://ann@db/search"),  # nothing to hide
]


@pytest.fixture
def project(workdir):
    from tests.support.data import make_rows

    (workdir / "data/raw").mkdir(parents=True)
    make_rows(30).to_csv(workdir / "data/raw/tiny.csv", index=False)
    return workdir


@pytest.mark.parametrize("url, masked", TRICKY)
def test_every_credential_of_a_url_is_masked(url, masked):
    assert masked_url(url) == masked
    assert "hunter2" not in masked_url(url) and "s3/cr" not in masked_url(url)


def test_a_password_in_search_storage_is_refused_without_echoing_it(project, tiny_model):
    for url, _ in TRICKY[:3]:
        raw = tiny_params(tiny_model, search={"storage": url})
        with pytest.raises(UserError, match="put the password in an environment variable and name it in search.storage_password_env") as error:
            load(raw)
        assert "hunter2" not in str(error.value) and "s3/cr" not in str(error.value)
    assert url_secrets(TRICKY[3][0]) == []
    load(tiny_params(tiny_model, search={"storage": "postgresql://ann@db/search", "storage_password_env": "FINETUNE_SEARCH_PASSWORD"}))


def test_the_password_reaches_only_the_connection(project, tiny_model, monkeypatch):
    from finetune import search

    params = load(tiny_params(tiny_model, search={"storage": "postgresql://ann@127.0.0.1:9/search", "storage_password_env": "PW"}))
    with pytest.raises(UserError, match="search.storage_password_env PW: that environment variable is not set"):
        search._with_password(search.storage_url(params.search), params.search)
    monkeypatch.setitem(os.environ, "PW", "s3/cr@t")
    assert search._with_password(search.storage_url(params.search), params.search) == "postgresql://ann:s3%2Fcr%40t@127.0.0.1:9/search"
    assert "s3" not in search.storage_url(params.search)  # what is printed


def test_an_override_error_names_the_keys_not_the_values(tmp_path, tiny_model):
    from flows.pipeline import apply_overrides
    from tests.support.data import make_rows
    from tests.support.params import write_params

    (tmp_path / "data/raw").mkdir(parents=True)
    make_rows(30).to_csv(tmp_path / "data/raw/tiny.csv", index=False)
    write_params(tmp_path, tiny_params(tiny_model))
    with pytest.raises(UserError) as error:
        apply_overrides(tmp_path, ["search.storage=postgresql://ann:hunter2@db/search"], write=False)
    assert "hunter2" not in str(error.value) and "-S search.storage" in str(error.value)
