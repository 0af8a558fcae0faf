"""Prediction throughput of a trained text classifier: our `finetune predict` path vs Hugging Face's pipeline, and
`finetune serve` over HTTP.

Measures, in one run (these machines are noisy: each timing is warmed up once, then taken 3 times and the median kept,
the two runs of an in-process comparison taking turns; every ratio compares numbers measured in this command):
  1. predict : `finetune.inference.load(model).predict(csv, batch_size=32)` on N real tweets (a seeded sample of
               builtin:tweets written to a CSV with a `text` column), rows/s, vs the reference
               `transformers.pipeline("text-classification", model=MODEL, batch_size=32, truncation=True, max_length=64)`
               on the same texts, in the same process with the same torch threads; ratio ours / HF.
  2. serve   : the real server (`finetune serve --model MODEL --port FREE_PORT`, a separate process, same thread count),
               called sequentially with httpx: 200 requests of 1 row, then 30 requests of 32 rows; requests/s, rows/s,
               p50 / p95 latency (ms); ratio of serve rows/s at batch 32 to in-process predict rows/s on the same
               960 rows (one call, batch 32), and to 30 in-process predict calls of 32 rows (the per-call cost without HTTP).
The model is a throwaway: a scratch copy of this commit (bench/scratch.py) runs `dvc repro train` with the project's
params.yaml (the default text config, builtin:tweets + builtin:minilm), data.max_rows 600 and train.epochs 0.2 (about a
minute on 2 cores); its weights' quality is irrelevant to throughput.

    python bench/predict_serve.py [--rows 2000] [--keep DIR] [--profile]     # ~5 min on 2 cores
"""
from __future__ import annotations

import os

os.environ.update(HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scratch  # noqa: E402  bench/scratch.py (this script's folder is on sys.path)
import yaml  # noqa: E402

ROOT = scratch.ROOT
warnings.filterwarnings("ignore")

BATCH, REPEATS, SERVE_ONE, SERVE_BATCHES = 32, 3, 200, 30


def train_model(work: Path) -> Path:
    """`dvc repro train` (the real ingest, preprocess and train stages) in a scratch copy of this commit (bench/scratch.py):
    the default text params on 600 tweets for 0.2 epochs. models/model."""
    model = work / "models/model"
    if (model / "pipeline.json").is_file():
        print(f"model: reusing {model}")
        return model
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["max_rows"], params["train"]["epochs"] = 600, 0.2
    scratch.repro(scratch.project(params, work, "predict-serve-"), "train")
    return model


def tweets(rows: int) -> list[str]:
    """`rows` real tweets: a seeded sample of builtin:tweets' readable, non-empty texts (repeated if it has fewer), each
    one's whitespace runs made single spaces (as predict's normalization does anyway): a bare \r inside a text would
    otherwise end a row when pandas reads the CSV back, and ours and HF's would see different rows."""
    from finetune.config.params import load_params
    from finetune.tasks import get_task

    params = load_params(ROOT / "params.yaml")
    frame = get_task(params.task).read(params.data).frame
    texts = frame["input"].dropna().astype(str).str.replace(r"\s+", " ", regex=True).str.strip()
    texts = texts[texts.str.strip() != ""].reset_index(drop=True)
    picked = texts.sample(n=min(rows, len(texts)), random_state=0).tolist()
    return (picked * (rows // len(picked) + 1))[:rows]


def timed(runs: dict) -> dict:
    """{name: median seconds of REPEATS calls, the runs taking turns}."""
    return {name: statistics.median(values) for name, values in scratch.taking_turns(runs, REPEATS).items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    env = {**scratch.ENV, "OMP_NUM_THREADS": str(threads)}  # the same thread count as the in-process runs (torch's default here)
    command = [str(Path(sys.executable).parent / "finetune"), "serve", "--model", str(model), "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"finetune serve exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.terminate()
    sys.exit(f"finetune serve: no /health within 180 s:\n{log.read_text()[-3000:]}")


def serve_round(client, url: str, requests: list[list[str]]) -> dict:
    latencies = []
    start = time.perf_counter()
    for texts in requests:
        sent = time.perf_counter()
        answer = client.post(url, json={"rows": [{"text": t} for t in texts]})
        latencies.append(time.perf_counter() - sent)
        answer.raise_for_status()
        if len(answer.json()["predictions"]) != len(texts):
            sys.exit(f"serve: {len(texts)} rows sent, {len(answer.json()['predictions'])} predicted")
    seconds = time.perf_counter() - start
    return {"requests_s": len(requests) / seconds, "rows_s": sum(map(len, requests)) / seconds,
            "p50": 1000 * float(np.percentile(latencies, 50)), "p95": 1000 * float(np.percentile(latencies, 95))}


def serve(model: Path, port: int, threads: int, log: Path, served: list[str]) -> dict:
    """Sequential requests to the real server: batch 1 and batch 32, each warmed up, then 3 rounds (median of each number)."""
    import httpx

    runs = {1: [[t] for t in served[:SERVE_ONE]], BATCH: [served[i * BATCH:(i + 1) * BATCH] for i in range(SERVE_BATCHES)]}
    server = start_server(model, port, threads, log)
    try:
        url = f"http://127.0.0.1:{port}/predict"
        results = {}
        with httpx.Client(timeout=120) as client:
            for size, requests in runs.items():
                serve_round(client, url, requests[:5])  # warm-up
                rounds = [serve_round(client, url, requests) for _ in range(REPEATS)]
                results[size] = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        return results
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="tweets predicted (default %(default)s)")
    parser.add_argument("--keep", type=Path, help="train in this folder and keep it; a model already there is reused "
                                                  "(default: a temporary folder, removed)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one predictor.predict call (top 15 cumulative)")
    args = parser.parse_args()
    import torch
    from transformers import pipeline

    from finetune.inference import load

    total, load_before = time.perf_counter(), os.getloadavg()[0]
    work = args.keep or Path(tempfile.mkdtemp(prefix="predict-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = train_model(work)
        texts = tweets(args.rows)
        csv = work / "bench-tweets.csv"
        pd.DataFrame({"text": texts}).to_csv(csv, index=False)
        served_csv = work / "bench-served.csv"  # the rows the batch-32 requests send
        served = [texts[i % len(texts)] for i in range(BATCH * SERVE_BATCHES)]
        pd.DataFrame({"text": served}).to_csv(served_csv, index=False)
        small = []  # the same rows as 30 files of 32: in-process, call per request, no HTTP
        for i in range(SERVE_BATCHES):
            small.append(work / f"bench-small-{i}.csv")
            pd.DataFrame({"text": served[i * BATCH:(i + 1) * BATCH]}).to_csv(small[-1], index=False)
        threads = torch.get_num_threads()

        predictor = load(model)
        predicted = predictor.predict(csv, batch_size=BATCH)
        if len(predicted.table) != len(texts) or predicted.bad:
            sys.exit(f"predict returned {len(predicted.table)} rows ({len(predicted.bad)} rejected) for {len(texts)} texts")
        hf_pipe = pipeline("text-classification", model=str(model), batch_size=BATCH, truncation=True, max_length=64)
        assert torch.get_num_threads() == threads, "the pipeline changed torch's thread count"
        seconds = timed({"ours": lambda: predictor.predict(csv, batch_size=BATCH), "hf": lambda: hf_pipe(texts)})
        ours, hf = len(texts) / seconds["ours"], len(texts) / seconds["hf"]
        seconds = timed({"one": lambda: predictor.predict(served_csv, batch_size=BATCH),
                         "calls": lambda: [predictor.predict(path, batch_size=BATCH) for path in small]})
        ours_served, ours_calls = len(served) / seconds["one"], len(served) / seconds["calls"]
        tokens = [len(ids) for ids in hf_pipe.tokenizer(texts, truncation=True, max_length=64)["input_ids"]]
        print(f"{len(texts)} tweets ({len(set(texts))} distinct), tokens per text mean {np.mean(tokens):.1f} / "
              f"max {max(tokens)}, {threads} torch threads (in-process and server), batch {BATCH}, "
              f"median of {REPEATS} after a warm-up, ours and HF taking turns")
        print(f"predict  ours {ours:7.1f} rows/s | HF pipeline {hf:7.1f} rows/s | ours/HF {ours / hf:.2f}x")

        served_results = serve(model, free_port(), threads, work / "serve.log", served)
        for size, r in served_results.items():
            print(f"serve    batch {size:2d}: {r['requests_s']:6.1f} requests/s {r['rows_s']:7.1f} rows/s  "
                  f"p50 {r['p50']:6.1f} ms  p95 {r['p95']:6.1f} ms")
        b32 = served_results[BATCH]["rows_s"]
        print(f"serve b32 / in-process predict on the same {len(served)} rows: {b32 / ours_served:.2f}x one call "
              f"({ours_served:.1f} rows/s), {b32 / ours_calls:.2f}x {SERVE_BATCHES} calls of {BATCH} ({ours_calls:.1f} rows/s)")

        print()
        print("| measurement | rows/s | reference | reference rows/s | ratio |")
        print("|---|---|---|---|---|")
        print(f"| predict, {len(texts)} rows, batch {BATCH} | {ours:.1f} | HF pipeline | {hf:.1f} | {ours / hf:.2f}x |")
        for size, r in served_results.items():
            print(f"| serve, {SERVE_ONE if size == 1 else SERVE_BATCHES} requests of {size} row(s) (p50 {r['p50']:.1f} ms, "
                  f"p95 {r['p95']:.1f} ms, {r['requests_s']:.1f} req/s) | {r['rows_s']:.1f} | "
                  + (f"in-process predict, same {len(served)} rows, one call | {ours_served:.1f} | "
                     f"{r['rows_s'] / ours_served:.2f}x |" if size == BATCH else "- | - | - |"))
        print(f"| in-process predict, {SERVE_BATCHES} calls of {BATCH} rows | {ours_calls:.1f} | in-process, one call | "
              f"{ours_served:.1f} | {ours_calls / ours_served:.2f}x |")

        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(predictor.predict, csv, BATCH)
            print(f"\ncProfile of one predictor.predict({len(texts)} rows, batch {BATCH}), top 15 cumulative:")
            pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(15)
        print(f"total {time.perf_counter() - total:.0f} s; 1-min load average {load_before:.2f} at the start, "
              f"{os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} CPUs)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
