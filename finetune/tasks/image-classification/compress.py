"""compress for the image task: int8 for its CNNs (torchvision, EfficientNet-Lite): onnxruntime's static quantization of the teacher's
ONNX export, in place of torch.ao's FX static int8 (deprecated, and measured worse: docs/benchmarks/compression.md).

QDQ format, int8 weights per output channel, uint8 activations with MinMax ranges from the compress stage's calibration
batches (compress.quantize.calibration_batches x 32 train images), after onnxruntime's own pre-processing (shape
inference, BatchNorm folded into the convolutions). On Fashion-MNIST's EfficientNet-Lite0 at 64 px this kept 98.2 % of
the fp32 predictions (torch.ao: 87.4 %) at 6x the PyTorch teacher's speed at batch 1 and 3x at batch 32 (torch.ao:
1.1x / 1.6x). Pruning and students stay the CNN compressor's (finetune/compression/convnets.py); ViTs get the
transformer compressor (dynamic int8).
"""
from __future__ import annotations

from pathlib import Path

from finetune.compression import onnx_export
from finetune.compression.convnets import MIN_CALIBRATION_IMAGES, ConvNetCompressor
from finetune.errors import Unsupported


class OnnxInt8ConvNets(ConvNetCompressor):
    def quantize(self, model, calibration, config, folder):
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Batches(CalibrationDataReader):
            def __init__(self):
                self.batches = iter([{"pixel_values": batch["pixel_values"].numpy()} for batch in calibration])

            def get_next(self):
                return next(self.batches, None)

        images = sum(len(batch["pixel_values"]) for batch in calibration)
        if images < MIN_CALIBRATION_IMAGES:
            raise Unsupported(f"calibration data too small: {images} train images, static int8 needs at least {MIN_CALIBRATION_IMAGES} "
                              "to estimate activation ranges")
        target = folder / onnx_export.INT8_MODEL
        fp32, prepared = (target.with_name(f"{target.name}.{step}") for step in ("fp32", "prepared"))
        try:
            onnx_export.export(model, calibration[0], fp32)
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(str(prepared), str(target), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            for path in (fp32, prepared):
                path.unlink(missing_ok=True)
        return {"runtime": "onnxruntime", "scheme": "static (QDQ): weights int8 per output channel, activations uint8 from calibrated "
                "ranges, BatchNorm folded", "calibration_images": images}

    def load_quantized(self, folder: Path):
        return onnx_export.OnnxModel(folder / onnx_export.INT8_MODEL)


def with_onnx_int8(compressor, models):
    """The CNN compressor the family found, with onnxruntime's int8; any other (a ViT's transformer one) as it is."""
    return OnnxInt8ConvNets(models) if type(compressor) is ConvNetCompressor else compressor
