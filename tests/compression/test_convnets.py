"""compress on CNNs and a ViT: static int8 (onnxruntime) agrees with fp32 and predicts, channel pruning
gives the expected shapes and reloads, the student drops the shape-keeping blocks and learns from the
teacher, ONNX matches PyTorch, and what cannot apply is skipped with its reason."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from finetune import paths
from finetune.compression.compressors import parameter_count
from finetune.errors import UserError
from finetune.families.classification.compress import compressor_for, feature_batches
from finetune.io import read_json
from finetune.tasks import get_task
from stages import compress, ingest, preprocess, train
from tests.support.data import write_image_folder
from tests.support.params import load, tiny_image_params

TASK = get_task("image-classification")
EFFICIENTNET = "builtin:efficientnet-lite0"


def _params(model=EFFICIENTNET, **compress_section):
    section = {"teacher": "primary", "methods": ["int8", "prune", "distill"], "export": ["onnx"],
               "quantize": {"calibration_batches": 2}, "prune": {"structure": "channels", "sparsity": 0.5, "recover_epochs": 1},
               "distill": {"epochs": 2, "learning_rate": 1e-3, "batch_size": 16}, "latency": {"repeats": 3}}
    for key, value in compress_section.items():
        section[key] = value if not isinstance(value, dict) else {**section.get(key, {}), **value}
    return load(tiny_image_params(model, compress=section, preprocess={"image_size": 32},
                                  train={"epochs": 6, "batch_size": 8, "learning_rate": 3e-3}))


@pytest.fixture(scope="module")
def efficientnet_project(tmp_path_factory):
    """30 generated images a class, EfficientNet-Lite0 (its real ImageNet weights) fine-tuned for 6 epochs at 32x32 (val accuracy 1.0)."""
    import os

    root = tmp_path_factory.mktemp("efficientnet")
    write_image_folder(root / "data/raw/images", 30)
    before = os.getcwd()
    os.chdir(root)
    try:
        params = _params()
        ingest.run(params)
        preprocess.run(params)
        train.run(params)
    finally:
        os.chdir(before)
    return root


@pytest.fixture(scope="module")
def compressed(efficientnet_project, tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("efficientnet-compressed")
    shutil.copytree(efficientnet_project, root, dirs_exist_ok=True)
    before = os.getcwd()
    os.chdir(root)
    try:
        yield root, compress.run(_params())
    finally:
        os.chdir(before)


@pytest.fixture
def efficientnet_workdir(efficientnet_project, workdir):
    shutil.copytree(efficientnet_project, workdir, dirs_exist_ok=True)
    return workdir


def test_the_image_tasks_int8_is_an_onnxruntime_static_graph_that_agrees_with_fp32_and_predicts(compressed):
    import onnx

    from finetune.compression import onnx_export
    from finetune.families.classification.predict import load_model

    root, result = compressed
    folder = root / paths.COMPRESSED / "int8"
    assert sorted(p.name for p in folder.iterdir()) == ["image_model.json", "image_processor.json", "label_map.json", "model.int8.onnx",
                                                         "pipeline.json"]  # predict reads it
    graph = onnx.load(str(folder / onnx_export.INT8_MODEL)).graph
    convs = [node for node in graph.node if node.op_type == "Conv"]
    weights = {w.name: w for w in graph.initializer}
    dequantized = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    assert convs and all(weights[dequantized[conv.input[1]]].data_type == onnx.TensorProto.INT8 for conv in convs)  # int8 weights
    assert sum(node.op_type == "QuantizeLinear" for node in graph.node) >= len(convs) / 2  # activations quantized between them
    assert not any(node.op_type == "BatchNormalization" for node in graph.node)  # folded into the convolutions
    details, row = result["details"]["int8"], result["models"]["int8"]
    assert details["runtime"] == "onnxruntime" and details["calibration_images"] == 54  # 2 batches of 32 asked, 54 train images there are
    assert row["size_ratio"] < 0.35  # measured 0.29: int8 weights + per-channel scales, int32 biases, the graph
    assert row["parameters"] == pytest.approx(result["models"]["teacher"]["parameters"], rel=0.02)  # folding drops BatchNorm's

    test = pd.read_parquet(root / paths.PREPARED / "test.parquet")
    layout = read_json(root / paths.LABEL_MAP)
    teacher, int8 = (TASK.predict_proba(load_model(TASK, path, False), TASK.models.load_processor(str(path), False), test, layout, 64)
                     for path in (root / paths.MODEL, folder))  # as predict and serve load them
    saved = pd.read_csv(root / paths.COMPRESS / "predictions.csv")
    assert [layout["labels"][i] for i in int8.argmax(axis=1)] == saved["int8_predicted"].tolist()
    assert row["agreement_with_teacher"] == pytest.approx(np.mean(int8.argmax(axis=1) == teacher.argmax(axis=1)), abs=1e-4)  # rounded
    # A 32-pixel model calibrated on 54 images moves probabilities by up to ~0.45 in int8 (measured on AVX2 with 7- and
    # 8-bit weights alike), so near-ties may flip (1-2 of these 18 rows); a row the teacher decides by a margin of 0.5 or
    # more must keep its class, and most rows are such rows
    top2 = np.sort(teacher, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] >= 0.5
    assert decided.mean() >= 0.5 and (int8.argmax(axis=1) == teacher.argmax(axis=1))[decided].all()


def test_an_int8_folder_from_the_old_torch_ao_path_asks_for_a_rerun_of_compress(compressed, tmp_path):
    """What compress wrote before onnxruntime (int8.safetensors beside the teacher's files) is refused by name."""
    from finetune.families.classification.predict import INT8_WEIGHTS, load_model

    root, _ = compressed
    folder = tmp_path / "int8"
    shutil.copytree(root / paths.MODEL, folder, ignore=shutil.ignore_patterns("*.safetensors", "training_args.json"))
    (folder / INT8_WEIGHTS).write_bytes(b"")
    with pytest.raises(UserError, match=r"older version of the compress stage \(torch.ao\); `dvc repro compress` remakes it"):
        load_model(TASK, folder, False)


def test_channel_pruning_halves_every_convolution_and_the_pruned_model_reloads(compressed):
    root, result = compressed
    teacher = TASK.models.load_trained(str(root / paths.MODEL), False)
    pruned = TASK.models.load_trained(str(root / paths.COMPRESSED / "pruned"), False)
    convs = {name: m for name, m in teacher.named_modules() if isinstance(m, torch.nn.Conv2d)}
    for name, module in pruned.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            assert module.out_channels == convs[name].out_channels - int(convs[name].out_channels * 0.5), name
    assert pruned.net._conv_stem.out_channels == 16 and pruned.net._fc.in_features == 640 and pruned.net._fc.out_features == 3
    details = result["details"]["prune"]
    assert details["channels_removed"] == pytest.approx(0.5, abs=0.01)
    assert result["models"]["prune"]["parameters"] == parameter_count(pruned) < 0.35 * parameter_count(teacher)
    assert details["recovery"]["steps"] > 0


def test_the_student_keeps_only_the_blocks_that_change_the_shape(compressed):
    root, result = compressed
    assert result["details"]["distill"]["layers_kept"] == [0, 1, 3, 5, 8, 11, 15]  # EfficientNet-Lite0: the first block of each stage
    student = TASK.models.load_trained(str(root / paths.COMPRESSED / "distilled"), False)
    assert len(student.net._blocks) == 7
    assert result["models"]["distill"]["parameters"] < result["models"]["teacher"]["parameters"]


def test_onnx_exports_match_pytorch(compressed):
    root, result = compressed
    for name in ("teacher", "prune", "distill"):
        assert (root / paths.COMPRESSED / "onnx" / f"{name}.onnx").is_file() and result["models"][name]["onnx_latency_ms_batch_1"] > 0
    for name in ("teacher", "prune", "distill"):
        row = result["models"][name]
        assert row["onnx_max_abs_probability_difference"] < 1e-5  # measured <= 7.2e-7
        assert row["onnx_prediction_agreement"] == 1.0
    assert result["details"]["onnx"]["skipped"] == {"int8": "it already is an onnxruntime model (model.int8.onnx)"}


def test_distillation_lowers_the_students_kl_to_the_teacher(efficientnet_workdir):
    """Ten epochs at learning rate 3e-3 on batches of 8, BatchNorm in train mode: without recalibrating the running
    statistics the student's KL went 0.56 -> 4.25 on an AMD EPYC (EfficientNet-Lite's momentum 0.01 leaves the teacher's
    statistics in place while the student learns with each batch's own); recalibrated, 0.12 there."""
    from finetune.compression import distill
    from finetune.config.sections import Distill

    params = _params()
    processor = TASK.models.load_processor(str(paths.MODEL), False)
    teacher = TASK.models.load_trained(str(paths.MODEL), False).eval()
    train_split = pd.read_parquet(paths.PREPARED / "train.parquet")
    layout = read_json(paths.LABEL_MAP)
    batch = feature_batches(TASK, processor, train_split, layout, 32)
    student, _ = compressor_for(teacher, TASK.models).student(teacher, params.compress, batch[0])

    def kl() -> float:
        p = TASK.predict_proba(teacher, processor, train_split, layout, 64)
        q = TASK.predict_proba(student, processor, train_split, layout, 64)
        return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))

    before = kl()
    logits = np.log(TASK.predict_proba(teacher, processor, train_split, layout, 64) + 1e-12)
    trained = distill.train_on_teacher(student, TASK.models.dataset(train_split, layout, processor), logits, TASK.models.collator(processor),
                                       Distill(alpha=0.0, learning_rate=3e-3, batch_size=8), 10, 0, "cpu", False, efficientnet_workdir / "work")
    assert trained["batchnorm_recalibrated"] == sum(isinstance(m, torch.nn.BatchNorm2d) for m in student.modules()) > 0
    assert not student.training  # left in eval mode, as scoring uses it
    assert kl() < 0.5 * before


def test_recalibration_makes_the_running_statistics_those_of_the_training_rows():
    """What recalibrate_batchnorm promises, exactly: after it, eval mode normalises with the training rows' own
    statistics (their exact average over batches), whatever the statistics held before."""
    from finetune.compression.distill import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4, momentum=0.01))
    model[1].running_mean.fill_(100.0)  # stale: another network's statistics
    rows = [{"x": torch.randn(3) * 2 + 1} for _ in range(64)]

    class Keywords(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x)

    assert recalibrate_batchnorm(Keywords(), rows, lambda items: {"x": torch.stack([i["x"] for i in items])}, 16) == 1
    with torch.no_grad():
        hidden = model[0](torch.stack([r["x"] for r in rows]))
    assert torch.allclose(model[1].running_mean, hidden.mean(dim=0), atol=1e-5)  # 4 equal batches: the mean of batch means


def test_what_cannot_apply_is_skipped_with_its_reason(efficientnet_workdir):
    train_rows = pd.read_parquet(paths.PREPARED / "train.parquet")
    train_rows.head(20).to_parquet(paths.PREPARED / "train.parquet")  # too few images to calibrate
    result = compress.run(_params(prune={"sparsity": 0.95}, export=[]))
    assert result["details"]["skipped"] == {
        "int8": "calibration data too small: 20 train images, static int8 needs at least 32 to estimate activation ranges",
        "prune": "compress.prune.sparsity 0.95 would remove every channel of _blocks.0._project_conv (16 channels)"}
    assert set(result["models"]) == {"teacher", "distill"}
    assert not (paths.COMPRESSED / "int8").exists()
    with pytest.raises(UserError, match=r"compress\.distill\.layers \[0, 15\] drops blocks \[1, 3, 5, 8, 11\], which change the feature"):
        compress.run(_params(distill={"layers": [0, 15]}))


def test_a_tiny_vit_takes_the_transformer_methods(workdir, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    source = tmp_path / "vit"
    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=32, num_labels=3)).save_pretrained(source)
    (source / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "ViTImageProcessor", "image_mean": [0.5] * 3,
                                                                  "image_std": [0.5] * 3, "size": {"height": 16, "width": 16}}))
    write_image_folder(workdir / "data/raw/images", 20)
    params = _params(str(source), prune={"structure": "ffn_neurons"}, distill={"epochs": 1}, quantize={"calibration_batches": 1})
    params = params.model_copy(update={"preprocess": params.preprocess.model_copy(update={"image_size": 16})})
    ingest.run(params)
    preprocess.run(params)
    train.run(params.model_copy(update={"train": params.train.model_copy(update={"epochs": 1})}))
    result = compress.run(params)
    assert set(result["models"]) == {"teacher", "int8", "prune", "distill"}
    assert "dynamic" in result["details"]["int8"]["scheme"]
    assert result["details"]["prune"]["ffn_neurons_removed"] == 0.5
    assert result["details"]["distill"]["layers_kept"] == [1]
    assert result["models"]["prune"]["onnx_max_abs_probability_difference"] < 1e-4
