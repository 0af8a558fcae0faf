"""Data-parallel training (DDP) with torchrun: `train.processes: N` runs `fit` in N processes; each takes
batch_size rows of every step and the gradients are averaged, so one step sees batch_size x N rows.

- `launch` (called by fit.py's fit, so the train stage, finetune members and search trials all get
  it): hands the run's inputs over through files in .cache/checkpoints/<fingerprint>-ddp/ (params as JSON,
  splits as parquet, the label map), runs torchrun (`--standalone` on 127.0.0.1 only, see loopback_torchrun)
  `--nproc_per_node N -m finetune.training.distributed FOLDER`, streams the ranks' output, and returns the summary
  rank 0 wrote. A failure is raised with the ranks' last stderr lines (a rank's UserError as that UserError).
- Every rank runs the same `fit` on the same inputs; only rank 0 writes (model, curves, summary, checkpoints:
  the Trainer and transformers' save_pretrained write from global rank 0; each rank adds its RNG state to a
  checkpoint).
  Validation is scored on the whole val split once: the Trainer gathers the ranks' predictions and drops
  the rows repeated to even out the shards (accuracy and F1 exact; the val loss averages per-rank batch
  means, so with a val size the processes do not divide, a repeated row weighs in: ~1e-4 off on 31 rows).
- Backend: gloo on CPU, NCCL on CUDA (one GPU per process). Threads: each rank gets this process's torch
  threads // N (torchrun's own default would be 1 thread per rank).
- A killed run resumes like a single-process one (same fingerprint, last complete checkpoint). The ranks
  read a pipe from the launching process and exit when it closes, so a stage killed even with SIGKILL
  leaves no rank training on behind it.
- Multi-node: FINETUNE_TORCHRUN_ARGS replaces --standalone with torchrun's rendezvous options, e.g.
  "--nnodes 2 --node_rank 0 --master_addr 10.0.0.1 --master_port 29500" (node_rank 1 on the other), and
  train.processes is the processes per node (with the variable set, fit launches torchrun even for 1).
  Every node must see the project at the same path (a shared filesystem): rank 0 writes the model and the
  checkpoints there and every rank resumes from them. Run `dvc repro` on node 0 and `python -m stages.train`
  (the same stage) on the others: their processes train their share and the command ends without writing.
Limits: the learning rate is used as set, not rescaled for the larger global batch; BatchNorm statistics
are per process (no SyncBatchNorm), so a CNN does not train exactly as one process with the global batch;
a caller's in-memory callbacks (a search trial's Optuna pruner) cannot reach the ranks, so they are refused;
gradual_unfreeze is refused (finetune/config/params.py). Multi-node was tried as two "nodes" on one machine only.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
from torch.distributed.elastic.multiprocessing.errors import record

from finetune.config.params import Params, params_class
from finetune.config.sections import Train
from finetune.errors import UserError
from finetune.io import read_json, write_json

TORCHRUN_ARGS = "FINETUNE_TORCHRUN_ARGS"
# --standalone (one node, a fresh rendezvous) with every address on loopback; loopback_torchrun binds the stores there
LOOPBACK = ["--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--nnodes", "1", "--local-addr", "127.0.0.1"]
TAIL_LINES = 25


def in_rank() -> bool:
    """True inside a process torchrun started."""
    return "LOCAL_RANK" in os.environ


def writes_outputs() -> bool:
    """Rank 0 (or no torchrun at all): the one process that writes files (transformers saves weights from it only)."""
    return int(os.environ.get("RANK", "0")) == 0


def _rendezvous() -> tuple[list[str], str]:
    """TORCHRUN_ARGS's options for where the ranks meet (none on one machine: LOOPBACK), and a name for this node's
    inputs folder (nodes sharing the project each hand over their own)."""
    options = shlex.split(os.environ.get(TORCHRUN_ARGS, ""))
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--node_rank", "--node-rank", default="0")
    node = parser.parse_known_args(options)[0].node_rank
    return options, "" if node == "0" else f"-node{node}"


def launches(train: Train) -> bool:
    """Whether fit hands this run over to torchrun."""
    return not in_rank() and (train.processes > 1 or bool(os.environ.get(TORCHRUN_ARGS, "").strip()))


def launch(task, params: Params, splits: dict[str, pd.DataFrame], label_map: dict, model_dir: Path, live_dir: Path, run_name: str,
           folder: Path) -> dict:
    """Run fit in train.processes torchrun ranks on these inputs (handed over in `folder`; each rank loads the task of
    params.task by name); returns rank 0's summary."""
    import torch

    processes = params.train.processes
    rendezvous, node = _rendezvous()
    folder = folder.with_name(folder.name + node)
    shutil.rmtree(folder, ignore_errors=True)  # a killed launch's inputs: written again, identical
    folder.mkdir(parents=True)
    try:
        (folder / "params.json").write_text(params.model_dump_json())
        for name, table in splits.items():
            table.to_parquet(folder / f"{name}.parquet")
        write_json(folder / "label_map.json", label_map)
        write_json(folder / "call.json", {"model_dir": str(model_dir), "live_dir": str(live_dir), "run_name": run_name})
        threads = max(1, torch.get_num_threads() // processes)
        print(f"{run_name}: {processes} processes x batch {params.train.batch_size} = global batch {processes * params.train.batch_size}"
              f" per node, {threads} threads each; learning rate {params.train.learning_rate:g} as set (not rescaled)")
        torchrun = ["torch.distributed.run", *rendezvous] if rendezvous else [__name__, "--loopback-torchrun", *LOOPBACK]
        command = [sys.executable, "-m", *torchrun, "--nproc_per_node", str(processes), "-m", __name__, str(folder)]
        code = str(Path(__file__).resolve().parents[2])  # the ranks import this very code, whatever the working directory
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [code, os.environ.get("PYTHONPATH")]))}
        tail = collections.deque(maxlen=TAIL_LINES)
        # stdin: a pipe the ranks watch (they exit at its end); stderr: echoed and its tail kept for the error
        with subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as torchrun:
            for line in torchrun.stderr:
                sys.stderr.write(line)
                tail.append(line)
        if (folder / "error.txt").exists():
            raise UserError((folder / "error.txt").read_text())
        if torchrun.returncode != 0:
            raise RuntimeError(f"{run_name}: distributed training failed (torchrun exit status {torchrun.returncode}); "
                               f"the ranks' last stderr lines:\n{''.join(tail)}")
        if not (folder / "summary.json").exists():  # another node holds rank 0, which wrote everything
            print(f"{run_name}: this node's processes trained their share of the run; rank 0's node wrote the outputs")
            raise SystemExit(0)
        return read_json(folder / "summary.json")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _exit_with_launcher() -> None:
    while os.read(0, 4096):  # empty at end of file: the launching process closed the pipe or died
        pass
    os._exit(1)


@record  # torchrun's failure report then ends with the failing rank's traceback
def main(folder: Path) -> None:
    """One rank: fit on the inputs in `folder`; local rank 0 writes the summary (or a UserError) there."""
    from finetune.tasks import get_task  # an entry point (the ranks' main): it loads the task as a stage does
    from finetune.training.fit import fit

    threading.Thread(target=_exit_with_launcher, daemon=True).start()
    if not writes_outputs():
        sys.stdout = open(os.devnull, "w")  # one copy of the progress lines; warnings and errors still reach stderr
    raw = json.loads((folder / "params.json").read_text())
    # validated when the launcher loaded it; "probing" skips re-checking every search-space value
    params = params_class(raw["task"]).model_validate(raw, context={"task": raw["task"], "probing": True})
    splits = {path.stem: pd.read_parquet(path) for path in folder.glob("*.parquet")}
    call = read_json(folder / "call.json")
    try:
        summary = fit(get_task(params.task), params, splits, read_json(folder / "label_map.json"), Path(call["model_dir"]), Path(call["live_dir"]), call["run_name"])
    except UserError as error:
        if writes_outputs():
            (folder / "error.txt").write_text(str(error))
        sys.exit(2)
    finally:
        _leave_process_group()
    if writes_outputs():
        write_json(folder / "summary.json", summary)


def _leave_process_group() -> None:
    """Tear the process group down before the interpreter exits: left to exit, its C++ threads were destroyed while still
    joinable and a rank died with SIGABRT ("terminate called without an active exception") after training had ended."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def loopback_torchrun(argv: list[str]) -> None:
    """torchrun whose TCP stores listen on 127.0.0.1 only. torch binds a store's server to every interface whatever
    host it is given (--standalone's rendezvous store listened on *:PORT while a run trained, open to anyone on the
    network; a store accepts any client), and a listening socket handed over as master_listen_fd is the one way to
    choose its address, so the agent's stores are made that way. Multi-node runs (TORCHRUN_ARGS) use plain torchrun."""
    import socket
    import uuid

    import torch.distributed as dist
    from torch.distributed import run
    from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend

    class LoopbackStore(dist.TCPStore):
        def __init__(self, host_name, port, world_size=None, is_master=False, *args, **kwargs):
            if is_master and kwargs.get("master_listen_fd") is None:
                listener = socket.create_server(("127.0.0.1", port))
                host_name, port, kwargs["master_listen_fd"] = "127.0.0.1", listener.getsockname()[1], listener.detach()
            super().__init__(host_name, port, world_size, is_master, *args, **kwargs)

    dist.TCPStore = c10d_rendezvous_backend.TCPStore = LoopbackStore  # the names the agent's store factories call
    run.main(["--rdzv-id", uuid.uuid4().hex, *argv])


if __name__ == "__main__":
    if sys.argv[1] == "--loopback-torchrun":
        loopback_torchrun(sys.argv[2:])
    else:
        main(Path(sys.argv[1]))
