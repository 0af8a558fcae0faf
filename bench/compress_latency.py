"""CPU latency of the compressed models against their teacher, per thread count, measured in the
same run (the compress stage reports one thread count; this shows how the ratios move with more).
Run after `dvc repro compress`, from the project root:

    python bench/compress_latency.py --threads 1 2 --repeats 30
"""
import argparse
import json

import torch

from finetune import paths
from finetune.compression import quantize
from finetune.config.params import load_params
from finetune.families.classification.compress import FOLDERS, LATENCY_BATCHES, latencies_ms, teacher_data
from finetune.tasks import get_task

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
parser.add_argument("--repeats", type=int, default=30)
args = parser.parse_args()

params = load_params()
result = json.loads(paths.COMPRESS_METRICS.read_text())
task = get_task(params.task)
teacher_dir, teacher_params, tables, layout = teacher_data(task, params, result["teacher"], json.loads(paths.LABEL_MAP.read_text()))
processor = task.models.load_processor(str(teacher_dir), False)
models = {"teacher": task.models.load_trained(str(teacher_dir), False).eval()}
for method in [m for m in FOLDERS if m in result["models"]]:
    folder = paths.COMPRESSED / FOLDERS[method]
    models[method] = quantize.load(folder) if method == "int8" else task.models.load_trained(str(folder), False).eval()

print(f"teacher {result['teacher']}; median of {args.repeats} runs after warm-up, first test rows")
print("threads | model    | " + " | ".join(f"ms batch {b:>2} | speed-up" for b in LATENCY_BATCHES))
for threads in args.threads:
    torch.set_num_threads(threads)
    latency = latencies_ms(models, task, processor, tables["test"], layout, args.repeats)
    for name, by_batch in latency.items():
        cells = [f"{by_batch[b]:11.2f} | {latency['teacher'][b] / by_batch[b]:7.2f}x" for b in LATENCY_BATCHES]
        print(f"{threads:7d} | {name:8s} | " + " | ".join(cells))
