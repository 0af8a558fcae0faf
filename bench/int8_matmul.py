"""The per-token int8 product (finetune/compression/quantize.py `_int8_matmul`): torch._int_mm against the same int8 x int8
product in float64 (exact: what runs where ATen's CPU capability is not AVX-512) and in float32 (not exact past 2^24,
for scale), on SmolLM2-135M's linear shapes for one scored batch (8 blocks x 256 tokens = 2,048 rows). Each shape's
three products run in turns for --rounds rounds; the median time per product and its ratio to _int_mm are printed,
with the CPU's int8 instructions (a ratio depends on them: _int_mm has fast kernels only with AVX-512).

    python bench/int8_matmul.py                  # 2 threads, 5 rounds
    python bench/int8_matmul.py --threads 1 --rows 256
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from finetune.compression import quantize

SHAPES = {"q/o (576 -> 576)": (576, 576), "k/v (576 -> 192)": (576, 192), "gate/up (576 -> 1536)": (576, 1536),
          "down (1536 -> 576)": (1536, 576)}
PRODUCTS = {"_int_mm": lambda a, b: torch._int_mm(a, b).float(), "float64": lambda a, b: (a.double() @ b.double()).float(),
            "float32": lambda a, b: a.float() @ b.float()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"cpu: {quantize.cpu()}; threads {args.threads}; {args.rows} rows")
    generator = torch.Generator().manual_seed(0)
    print("| shape | " + " | ".join(f"{name} (s)" for name in PRODUCTS) + " | float64 / _int_mm | exact |")
    print("|---|" + "---|" * (len(PRODUCTS) + 2))
    for label, (inner, outer) in SHAPES.items():
        a = torch.randint(-128, 128, (args.rows, inner), dtype=torch.int8, generator=generator)
        b = torch.randint(-128, 128, (inner, outer), dtype=torch.int8, generator=generator)
        seconds = {name: [] for name in PRODUCTS}
        for _ in range(args.rounds):
            for name, product in PRODUCTS.items():
                start = time.perf_counter()
                product(a, b)
                seconds[name].append(time.perf_counter() - start)
        median = {name: statistics.median(times) for name, times in seconds.items()}
        exact = torch.equal(PRODUCTS["float64"](a, b), PRODUCTS["_int_mm"](a, b))
        print(f"| {label} | " + " | ".join(f"{median[name]:.4f}" for name in PRODUCTS)
              + f" | {median['float64'] / median['_int_mm']:.3f} | {exact} |")


if __name__ == "__main__":
    main()
