"""Making trained models smaller: int8 (quantize.py), pruning (prune.py), distillation (distill.py), CNNs (convnets.py),
one interface (compressors.py), ONNX export (onnx_export.py)."""
