"""`finetune serve`: a real server process on the session's tiny text model (tests/conftest.py text_repo_snapshot, READ
ONLY), called by a real HTTP client: the same predictions as `finetune predict` on the same rows, rejects with reasons,
413 for a body over the limit, 400 for a body that is not rows, loopback only by default."""
import base64
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from finetune import inference
from finetune.serving import BadRequest, write_rows
from tests.support.repos import tool_env

FINETUNE = Path(sys.executable).parent / "finetune"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(text_repo_snapshot, tmp_path):
    root = text_repo_snapshot[0]
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen([str(FINETUNE), "serve", "--model", str(root / "models/model"), "--port", str(port),
                                "--max-request-bytes", "20000"], cwd=tmp_path, env=tool_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
        time.sleep(0.3)
    yield root, url, port
    process.terminate()
    process.wait(timeout=30)


def test_the_server_predicts_what_predict_does(server, tmp_path):
    root, url, _ = server
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "task": "text-classification", "model": str(root / "models/model"),
                                                  "inputs": {"text": "text"}}
    texts = pd.read_csv(root / "data/raw/tiny.csv")["text"].head(32).tolist()
    rows = [{"text": text} for text in texts] + [{"text": "  "}, {"note": "no text"}]
    answer = httpx.post(f"{url}/predict", json={"rows": rows}, timeout=60)
    assert answer.status_code == 200, answer.text
    served = pd.DataFrame(answer.json()["predictions"])
    pd.DataFrame(rows).to_json(tmp_path / "rows.jsonl", orient="records", lines=True)
    predicted = inference.load(root / "models/model").predict(tmp_path / "rows.jsonl").table
    assert served["input"].tolist() == texts and served["row"].tolist() == list(range(1, 33))
    assert (served["label"] == predicted["label"]).all()
    assert (served.filter(like="prob_") - predicted.filter(like="prob_")).abs().max().max() < 1e-6
    assert [(r["row"], r["problem"]) for r in answer.json()["rejects"]] == [(33, "empty text"), (34, "empty text")]


def test_bad_requests_get_a_clear_4xx_and_the_server_goes_on(server):
    _, url, port = server
    big = httpx.post(f"{url}/predict", json={"rows": [{"text": "x" * 30_000}]})
    assert big.status_code == 413 and "at most 20,000" in big.json()["error"]
    assert httpx.post(f"{url}/predict", content=b"{not json").status_code == 400
    wrong = httpx.post(f"{url}/predict", json=[{"text": "a"}])
    assert wrong.status_code == 400 and 'expected a JSON object {"rows": [{...}, ...]}' in wrong.json()["error"]
    missing = httpx.post(f"{url}/predict", json={"rows": [{"review": "good"}]})
    assert missing.status_code == 400 and "missing column(s) text_column = 'text'" in missing.json()["error"]
    assert httpx.post(f"{url}/predict", json={"rows": [{"text": "good flight"}]}).status_code == 200
    outside = [a for a in socket.gethostbyname_ex(socket.gethostname())[2] if not a.startswith("127.")]
    for address in outside[:1]:  # bound to loopback only: this machine's other address gets no answer
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://{address}:{port}/health", timeout=2)


def test_images_arrive_as_base64_files_and_bad_ones_are_named(tmp_path):
    png = b"\x89PNG\r\n\x1a\n fake"
    path = write_rows([{"image": base64.b64encode(png).decode(), "text": "a"}], {"image": "image", "text": "text"}, tmp_path)
    assert (tmp_path / "1.image").read_bytes() == png
    assert pd.read_json(path, lines=True).to_dict("records") == [{"image": "1.image", "text": "a"}]
    with pytest.raises(BadRequest, match=r"row 1: 'image' is not base64"):
        write_rows([{"image": "not base64!"}], {"image": "image"}, tmp_path)
