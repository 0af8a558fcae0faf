"""train.processes: data-parallel training with torchrun (finetune/training/distributed.py), on CPU with gloo.

The data is chosen so both sides see identical global batches: 90 train rows, one step per epoch (2 processes
x 45 rows vs 1 process x 90 rows), dropout 0; val has 31 rows, an odd count the two ranks cannot split evenly."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune.errors import UserError
from finetune.tasks import get_task
from finetune.training.distributed import LOOPBACK
from stages import ingest, preprocess, train
from tests.support.data import make_rows
from tests.support.params import load, tiny_params
from tests.support.repos import PROJECT, tool_env, write_project

ROWS = 152  # -> 90 train, 31 val, 31 test rows
SETTINGS = {"epochs": 10, "dropout": 0.0}
MAX_WEIGHT_DIFFERENCE = 2e-6  # measured after 10 steps: 7.6e-7 (1 thread per rank), 1.1e-6 (2); float summation order only


def _project(root: Path, tiny_model, processes: int, batch: int, monkeypatch) -> dict:
    params = tiny_params(tiny_model, train={**SETTINGS, "processes": processes, "batch_size": batch})
    write_project(root, params, make_rows(ROWS))
    monkeypatch.chdir(root)
    ingest.run(load(params))
    preprocess.run(load(params))
    return params


def _trained(root: Path, tiny_model, processes: int, batch: int, monkeypatch) -> dict:
    """Train in-process (a DDP run launches torchrun from here); returns reports/train.json."""
    params = _project(root, tiny_model, processes, batch, monkeypatch)
    return train.run(load(params))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model) -> tuple[Path, dict]:
    """The reference: one process, batch 90 (the global batch of 2 x 45); its project folder and reports/train.json."""
    root = tmp_path_factory.mktemp("one")
    with pytest.MonkeyPatch.context() as monkeypatch:
        return root, _trained(root, tiny_model, 1, 90, monkeypatch)


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return load_file(root / "models/model/model.safetensors")


def _largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[key] - b[key]).abs().max().item() for key in a)


def _listing(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def test_two_processes_train_like_one_with_the_global_batch_and_only_rank_0_writes(tmp_path, tiny_model, monkeypatch, one_process):
    reference, one = one_process
    two = _trained(tmp_path / "two", tiny_model, 2, 45, monkeypatch)

    assert two["parallel"] == {"processes": 2, "backend": "gloo", "threads_per_process": max(1, torch.get_num_threads() // 2),
                               "batch_per_process": 45, "global_batch": 90, "learning_rate": 3e-3}
    assert one["parallel"]["processes"] == 1 and one["parallel"]["backend"] is None and one["parallel"]["global_batch"] == 90
    assert one["steps"] == two["steps"] == 10  # one step per epoch: the same global batches
    # validation scored on all 31 rows once (gathered from both ranks, the padding row dropped): the same scores
    assert two["val"]["accuracy"] == one["val"]["accuracy"] and two["val"]["f1_macro"] == one["val"]["f1_macro"]
    # the loss is the Trainer's mean of per-rank batch means, the padding row inside one of them (measured off by 1.7e-4)
    assert two["val"]["loss"] == pytest.approx(one["val"]["loss"], abs=1e-3)

    weights = {"one": _weights(reference), "two": _weights(tmp_path / "two")}
    assert _largest_difference(weights["one"], weights["two"]) < MAX_WEIGHT_DIFFERENCE
    pretrained = load_file(reference / "models/pretrained" / tiny_model.name / "model.safetensors")
    moved = max((weights["one"][f"bert.{key}"] - value).abs().max().item() for key, value in pretrained.items() if f"bert.{key}" in weights["one"])
    assert moved > 100 * MAX_WEIGHT_DIFFERENCE  # the bound is tight against how far training moved the weights

    # rank 1 wrote nothing of its own: the same files as one process, and no checkpoints or handed-over inputs left
    assert _listing(tmp_path / "two") == _listing(reference)
    assert not any((tmp_path / "two/.cache/checkpoints").iterdir())
    recorded = {name: json.loads((root / "models/model/training_args.json").read_text()) for name, root in (("one", reference), ("two", tmp_path / "two"))}
    changed = {key for key in recorded["one"] if recorded["one"][key] != recorded["two"][key]}
    assert changed == {"per_device_train_batch_size", "ddp_backend", "average_tokens_across_devices"}


def _processes_in(root: Path) -> list[int]:
    """Live processes whose working directory is root (a zombie has none)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == root.resolve():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_killed_ddp_run_leaves_no_rank_behind_and_resumes_from_its_checkpoint(tmp_path, tiny_model, monkeypatch, capfd, one_process):
    root = tmp_path / "killed"
    params = _project(root, tiny_model, 2, 45, monkeypatch)
    monkeypatch.chdir(tmp_path)
    env = {**tool_env(), "PYTHONPATH": str(PROJECT)}
    killed = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=root, env=env, stdout=(tmp_path / "killed.log").open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 180
    while not list((root / ".cache/checkpoints").glob("*/checkpoint-*/trainer_state.json")) and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)  # the stage and torchrun, mid-training; the ranks run in sessions of their own
    killed.wait()
    deadline = time.time() + 30
    while _processes_in(root) and time.time() < deadline:
        time.sleep(0.1)
    assert not _processes_in(root), "ranks kept running after their stage was killed"
    assert not (root / "models/model").exists(), (tmp_path / "killed.log").read_text()[-3000:]

    monkeypatch.chdir(root)
    capfd.readouterr()
    summary = train.run(load(params))  # in this process (saves a start of Python with transformers; the ranks start anyway)
    assert "train: resuming from .cache/checkpoints/" in capfd.readouterr().out
    assert summary["resumed"] and summary["steps"] == 10
    assert _largest_difference(_weights(one_process[0]), _weights(root)) < MAX_WEIGHT_DIFFERENCE


def test_processes_are_validated_and_what_cannot_cross_processes_is_refused(workdir, tiny_model):
    from transformers import TrainerCallback

    from finetune.search import run_search
    from finetune.training.fit import fit

    (workdir / "data/raw").mkdir(parents=True)
    make_rows(30).to_csv(workdir / "data/raw/tiny.csv", index=False)
    with pytest.raises(UserError, match=r"train\.processes: Input should be greater than or equal to 1 \(got 0\)"):
        load(tiny_params(tiny_model, train={"processes": 0}))
    with pytest.raises(UserError, match="processes 2 with strategy gradual_unfreeze"):
        load(tiny_params(tiny_model, train={"processes": 2, "strategy": "gradual_unfreeze"}))
    with pytest.raises(UserError, match=r"ensemble\.members\.seed1\.train overrides are invalid: processes"):
        load(tiny_params(tiny_model, ensemble={"members": {"seed1": {"train": {"processes": -1}}}}))

    params = load(tiny_params(tiny_model, train={"processes": 2}))
    with pytest.raises(UserError, match=r"train\.processes 2 trains in torchrun's processes, which this process's callbacks \(TrainerCallback\)"):
        fit(get_task(params.task), params, {}, {}, workdir / "model", workdir / "live", "trial", extra_callbacks=(TrainerCallback(),))
    with pytest.raises(UserError, match="search.pruner.enabled with train.processes 2"):
        run_search(params, runner=lambda number: {})
    assert not (workdir / ".cache").exists() and not (workdir / "model").exists()  # refused before any study, checkpoint or model


PROBE = """
import json, os, sys
import psutil
import torch.distributed as dist
dist.init_process_group("gloo")
if dist.get_rank() == 0:  # the agent (torchrun) hosts the stores; the ranks' own listeners are gloo's
    processes = [psutil.Process(os.getppid()), psutil.Process()]
    listening = [c.laddr.ip for p in processes for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    open(sys.argv[1], "w").write(json.dumps(listening))
dist.barrier()
dist.destroy_process_group()
"""


def test_one_machine_ranks_meet_on_loopback_only(tmp_path):
    """~7 s: the launcher fit uses on one machine listens on 127.0.0.1 only (plain `torchrun --standalone` listened on
    every interface, '::'), and the ranks still meet through it."""
    (tmp_path / "probe.py").write_text(PROBE)
    torchrun = ["-m", "finetune.training.distributed", "--loopback-torchrun", *LOOPBACK, "--nproc_per_node", "2"]
    done = subprocess.run([sys.executable, *torchrun, str(tmp_path / "probe.py"), str(tmp_path / "found.json")],
                          env=tool_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    addresses = json.loads((tmp_path / "found.json").read_text())
    assert len(addresses) >= 2 and set(addresses) == {"127.0.0.1"}, addresses  # the rendezvous store and gloo's, at least
