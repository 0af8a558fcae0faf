"""`finetune`: one command for what a user does with the pipeline (installed by `make setup`: `pip install -e .`).

Each subcommand is the module that already implements it, with its own argparse parser, so `finetune SUBCOMMAND --help`
lists exactly its options and nothing is defined twice (click or typer would have wrapped every parser in a second
definition that drifts). This file only dispatches, and imports nothing heavy before a subcommand is chosen:
`finetune --help` answers in a fraction of a second. A mistake the user can fix is one line on stderr and exit status 2.
Project commands (run, config, search, ui, deploy, worker, push, pull, runs, results) run in the project's root folder, where
dvc.yaml is; predict, generate, chat and serve need only a model folder.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

# offline and quiet, as the Makefile sets them: no telemetry, no hub look-ups (everything loaded ships in a pip package)
QUIET = {"DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1",
         "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


class Failed(Exception):
    """A user-fixable problem: printed as one line, exit status 2."""


def _project(argv: list[str] = ()) -> None:
    """Stop unless this is a project's root folder (asking a command for --help works anywhere)."""
    if not Path("dvc.yaml").is_file() and not {"-h", "--help"} & set(argv):
        raise Failed(f"{Path.cwd()} holds no dvc.yaml; run this command in the project's root folder")


def _call(args: list[str]) -> None:
    done = subprocess.run(args, check=False)
    if done.returncode:
        sys.exit(done.returncode)


def _tool(script: str, argv: list[str]) -> None:
    """main(argv) of a script of the project's tools/ folder, as `python tools/SCRIPT` runs it (for --help outside a project:
    the copy beside this package, in the clone it was installed from)."""
    _project(argv)
    path = Path("tools", script) if Path("tools", script).is_file() else Path(__file__).resolve().parents[1] / "tools" / script
    spec = importlib.util.spec_from_file_location(f"tools.{path.stem}", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # registered, as an import does (dataclasses need it)
    spec.loader.exec_module(module)
    module.main(argv)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="finetune run", description="Run the pipeline: `dvc repro`, so only what changed reruns "
                                     "(docs/stages.md); with --flow, the same DAG as a Prefect flow run.")
    parser.add_argument("stage", nargs="?", help="a dvc.yaml stage: run it and what it needs (default: every stage)")
    parser.add_argument("--config", metavar="NAME", help="switch params.yaml to configs/NAME.yaml first (text, image, lm...)")
    parser.add_argument("--force-config", action="store_true", help="with --config: overwrite params.yaml even if it holds unsaved edits")
    parser.add_argument("-f", "--force", action="store_true", help="rerun the stages even if DVC sees no change")
    parser.add_argument("--flow", action="store_true", help="run as a Prefect flow (shown in the Prefect UI; same DAG, same cache)")
    args = parser.parse_args(argv)
    _project()
    if args.config:
        _call([sys.executable, "tools/use_config.py", args.config, *(["--force"] if args.force_config else [])])
    if args.flow:
        from flows import pipeline

        pipeline.main([*([args.stage] if args.stage else []), *(["--force"] if args.force else [])])
    else:
        _call(["dvc", "repro", *([args.stage] if args.stage else []), *(["--force"] if args.force else [])])


def predict(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="finetune predict", description="Predict new rows with a trained model, through the "
                                     "reading, checks and preprocessing it was trained with (finetune/inference.py).")
    parser.add_argument("--model", default="models/model", help="a trained model folder: models/model, models/members/NAME, "
                        "models/compressed/METHOD (default: %(default)s)")
    parser.add_argument("--input", required=True, help="a CSV/TSV/JSONL/Parquet table with the model's input columns, or a folder "
                        "of images (image models) or of .txt documents (causal LMs)")
    parser.add_argument("--output", required=True, help="where the predictions go: .csv, .jsonl or .parquet")
    parser.add_argument("--rejects", help="where the rows that could not be predicted go, with the reason (default: OUTPUT.rejects.csv)")
    parser.add_argument("--batch-size", type=int, help="rows per forward pass (default: the model's train.eval_batch_size)")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="onnx: the folder's model.onnx on onnxruntime (finetune export --onnx) (default: %(default)s)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run modelling code shipped in the model folder")
    args = parser.parse_args(argv)
    from finetune.inference import predict_file

    predict_file(args.model, args.input, args.output, args.rejects, args.batch_size, args.trust_remote_code, args.backend)


def export(argv: list[str]) -> None:
    from finetune import export as module

    module.main(argv)


def generate(argv: list[str]) -> None:
    from finetune.families.generative import generate as module

    module.main(argv)


def chat(argv: list[str]) -> None:
    from finetune.families.generative import chat as module

    module.main(argv)


def serve(argv: list[str]) -> None:
    from finetune import serving

    serving.main(argv)


def search_arguments() -> argparse.ArgumentParser:
    """flows/search.py's command line, here: importing that module loads Prefect and Optuna (seconds), --help should not."""
    parser = argparse.ArgumentParser(prog="finetune search", description="Search hyper-parameters (params.yaml's `search` section) "
                                     "as a Prefect flow, every trial a task; a stopped search resumes (finetune/search.py says how).",
                                     epilog="Needs data/prepared (dvc repro preprocess). Results land in reports/search/.")
    parser.add_argument("--params", default="params.yaml", help="the params file (default: %(default)s)")
    parser.add_argument("--apply-best", action="store_true", help="write the best trial's values into params.yaml, then run dvc repro")
    parser.add_argument("--no-repro", action="store_true", help="with --apply-best: do not run `dvc repro` afterwards")
    parser.add_argument("--worker", action="store_true", help="join search.storage's study and run trials nobody has taken")
    parser.add_argument("--trial", type=int, help=argparse.SUPPRESS)  # internal: one trial, in this process
    return parser


def search(argv: list[str]) -> None:
    search_arguments().parse_args(argv)  # --help and mistakes answered before the slow import
    _project(argv)
    from flows import search as module

    module.main(argv)


def ui(argv: list[str]) -> None:
    _project(argv)
    from flows import ui as module

    module.main(argv)


def deploy(argv: list[str]) -> None:
    _project(argv)
    from flows import deploy as module

    module.main(argv)


def worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="finetune worker", description="Run deployed pipeline runs on this machine "
                                     "(docs/scale-out.md).")
    parser.add_argument("--pool", default="finetune", help="the work pool `finetune deploy` created (default: %(default)s)")
    args = parser.parse_args(argv)
    _project()
    _call(["prefect", "worker", "start", "--pool", args.pool])


def push(argv: list[str]) -> None:
    argparse.ArgumentParser(prog="finetune push", description="Share with the team (docs/team-sharing.md): check that every "
                            "output dvc.lock records is in the cache, push the data and the run cache, the outputs of every "
                            "other local run the remote lacks (named), then git.").parse_args(argv)
    _project()
    _call([sys.executable, "tools/check_push.py"])
    _call(["dvc", "push", "--run-cache"])
    _call([sys.executable, "tools/runs.py", "--push"])  # dvc push uploads only the checked-out run's outputs
    _call(["git", "push"])


def pull(argv: list[str]) -> None:
    argparse.ArgumentParser(prog="finetune pull", description="Get the team's latest: git first (the pulled dvc.lock names the data), "
                            "then the data and run cache; outputs nobody pushed are named as a warning.").parse_args(argv)
    _project()
    _call(["git", "pull", "--ff-only"])
    _call(["dvc", "pull", "--run-cache", "--allow-missing"])
    _call([sys.executable, "tools/check_push.py", "--pulled"])


def runs(argv: list[str]) -> None:
    _tool("runs.py", argv)


def config(argv: list[str]) -> None:
    _tool("use_config.py", argv)


def results(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="finetune results", description="Show the headline numbers of the last run, one line per "
                                     "stage (`dvc metrics show` lists every nested number, hundreds of columns wide).")
    parser.add_argument("--pages", action="store_true", help="instead: render the docs' results pages and the README's results "
                        "table from the committed runs in docs/results/ (tools/record_run.py records one)")
    args = parser.parse_args(argv)
    _project()
    if args.pages:
        from finetune.reporting.results_pages import write

        for path in write(Path.cwd()):
            print(f"wrote {path.relative_to(Path.cwd())}")
        return
    from finetune.reporting.headlines import headlines

    for line in headlines(Path("reports")):
        print(line)


COMMANDS = {
    "run": (run, "Run the pipeline (dvc repro: only what changed reruns); --config NAME switches configs first."),
    "config": (config, "Switch params.yaml to configs/NAME.yaml, or save it as one (--save)."),
    "predict": (predict, "Predict a table or folder of new rows with a trained model, rejects named with their reason."),
    "generate": (generate, "Continue a prompt with a trained causal LM, streaming the text."),
    "chat": (chat, "Talk to a trained chat model: a streamed multi-turn session (/reset, /system), or --prompts FILE."),
    "export": (export, "Copy a trained model into a shareable folder with its model card, and --onnx a checked ONNX graph."),
    "serve": (serve, "Serve a trained model over HTTP on 127.0.0.1 (POST /predict, GET /health)."),
    "results": (results, "Show the last run's headline numbers, one line per stage."),
    "search": (search, "Search hyper-parameters (params.yaml's search) as a Prefect flow; --apply-best writes the best."),
    "ui": (ui, "Start the Prefect UI with the pipeline served on a nightly schedule."),
    "deploy": (deploy, "Deploy the pipeline to a Prefect server for worker machines to run."),
    "worker": (worker, "Run deployed pipeline runs on this machine."),
    "push": (push, "Share the runs with the team: data and run cache to the DVC remote, then git."),
    "pull": (pull, "Get the team's runs: git, then the data and run cache."),
    "runs": (runs, "List the runs the team pushed (params, headline numbers, restorable here?); --apply RUN adopts one."),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    listing = "\n".join(f"  {name:<9} {summary}" for name, (_, summary) in COMMANDS.items())
    parser = argparse.ArgumentParser(prog="finetune", description="A reproducible fine-tuning pipeline: train, score, ensemble, "
                                     "compress and explain a model on your data, then predict and serve with it.",
                                     epilog=f"commands:\n{listing}\n\n`finetune COMMAND --help` describes each.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="what to do (listed below)")
    args = parser.parse_args(argv[:1])
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # dvc.yaml's `python` is this one
    sys.argv[0] = f"finetune {args.command}"  # the usage line of a command's own parser (argparse names it after argv[0])
    from finetune.errors import UserError

    try:
        COMMANDS[args.command][0](argv[1:])
    except (Failed, UserError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
