"""compress on the tiny project: int8 reloads from disk, pruning reaches its sparsity, distillation
moves the student towards the teacher, the report covers every model, bad params fail before work."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from finetune import paths
from finetune.compression import distill, onnx_export, prune, quantize
from finetune.config.sections import Distill
from finetune.errors import UserError
from finetune.families.classification.predict import load_model
from finetune.tasks import get_task
from stages import compress
from tests.support.params import load, tiny_params

COLUMNS = {"parameters", "size_mb", "latency_ms_batch_1", "latency_ms_batch_32", "accuracy", "f1_macro", "agreement_with_teacher",
           "accuracy_delta", "f1_macro_delta", "accuracy_share_of_teacher", "size_ratio", "speedup_batch_1", "speedup_batch_32"}


ONNX_COLUMNS = {"onnx_size_mb", "onnx_latency_ms_batch_1", "onnx_latency_ms_batch_32", "onnx_speedup_vs_torch_batch_1",
                "onnx_speedup_vs_torch_batch_32", "onnx_prediction_agreement", "onnx_max_abs_probability_difference"}


def _params(tiny_model, **compress_section):
    return load(tiny_params(tiny_model, compress={"teacher": "primary", **compress_section}))


@pytest.fixture(scope="module")
def compressed(trained_project, tmp_path_factory, tiny_model):
    """Every method run once on a copy of the trained tiny project."""
    import os
    import shutil

    root = tmp_path_factory.mktemp("compressed")
    shutil.copytree(trained_project, root, dirs_exist_ok=True)
    before = os.getcwd()
    os.chdir(root)
    try:
        result = compress.run(_params(tiny_model, prune={"structure": "ffn_neurons", "sparsity": 0.6, "recover_epochs": 2}, export=["onnx"]))
        yield root, result
    finally:
        os.chdir(before)


def test_the_report_has_every_model_and_every_column(compressed):
    root, result = compressed
    assert set(result["models"]) == {"teacher", "int8", "prune", "distill"}
    for name, row in result["models"].items():
        assert set(row) == COLUMNS | {"ci95"} | (ONNX_COLUMNS if name != "int8" else set()) | ({"vs_teacher"} if name != "teacher" else set())
        assert row["latency_ms_batch_1"] > 0 and row["latency_ms_batch_32"] > 0  # timed, never compared here: see bench/
    assert result["models"]["teacher"]["accuracy_delta"] == 0 and result["models"]["teacher"]["speedup_batch_1"] == 1
    assert json.loads((root / paths.COMPRESS_METRICS).read_text()) == result
    assert result["cpu"] == quantize.cpu()  # which int8 kernels the speed-ups were measured with
    assert (root / paths.COMPRESS / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    predictions = pd.read_csv(root / paths.COMPRESS / "predictions.csv")
    test = pd.read_parquet(root / paths.PREPARED / "test.parquet")
    assert predictions["id"].tolist() == test["id"].tolist()
    for name, row in result["models"].items():  # the scores are those of the saved predictions
        assert row["accuracy"] == pytest.approx((predictions[f"{name}_predicted"] == predictions["actual"]).mean(), abs=1e-4)
        assert row["ci95"]["accuracy"]["low"] <= row["accuracy"] <= row["ci95"]["accuracy"]["high"]
        if name != "teacher":  # each compressed model against its teacher, paired on the same rows
            assert row["vs_teacher"]["accuracy"]["difference"] == pytest.approx(row["accuracy_delta"], abs=1e-4)


def test_every_float_model_exports_to_onnx_with_the_same_predictions(compressed):
    root, result = compressed
    for name in ("teacher", "prune", "distill"):
        row = result["models"][name]
        assert (root / paths.COMPRESSED / "onnx" / f"{name}.onnx").is_file()
        assert row["onnx_max_abs_probability_difference"] < 1e-5 and row["onnx_prediction_agreement"] == 1.0  # measured ~1e-7
    assert result["details"]["onnx"]["skipped"]["int8"].startswith("it already is an onnxruntime model")


def test_int8_is_an_onnxruntime_graph_of_int8_matrices_that_reloads_and_agrees_with_fp32(compressed, tiny_model):
    import onnx

    root, result = compressed
    folder = root / paths.COMPRESSED / "int8"
    assert not list(folder.glob("*.safetensors")) and (folder / onnx_export.INT8_MODEL).is_file()
    graph = onnx.load(str(folder / onnx_export.INT8_MODEL)).graph
    int8 = {w.name: list(w.dims) for w in graph.initializer if w.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
            and w.name.endswith("_quantized")}
    assert sum(node.op_type == "MatMulInteger" for node in graph.node) == 2 * 6 + 2  # 6 linears a layer, pooler, head
    assert sum(name.startswith("model.bert.embeddings.") for name in int8) == 3  # word, position, token type tables
    assert int8["model.classifier.weight_quantized"] == [32, 3]
    row = result["models"]["int8"]
    assert row["parameters"] == result["models"]["teacher"]["parameters"]  # the same weights, each in one byte
    assert result["details"]["int8"]["runtime"] == "onnxruntime"
    float32 = sum(int(np.prod(w.dims)) for w in graph.initializer if w.data_type == onnx.TensorProto.FLOAT and not w.name.endswith("_scale"))
    assert float32 < 0.05 * row["parameters"]  # only biases and LayerNorms stay fp32 (measured 3 %); on a model this tiny the
    # graph itself outweighs the weights, so the file's size ratio says nothing here (MiniLM: 0.26, docs/benchmarks/compression.md)
    assert row["agreement_with_teacher"] >= 0.95  # measured 1.0 on the 30 tiny test rows

    # the same reload, as predict loads the folder, gives the stage's predictions
    task = get_task("text-classification")
    model = load_model(task, folder, False)
    test = pd.read_parquet(root / paths.PREPARED / "test.parquet")
    processor = task.models.load_processor(str(folder), False)
    layout = json.loads((folder / "label_map.json").read_text())
    predicted = task.predict_proba(model, processor, test, layout, 64).argmax(axis=1)
    saved = pd.read_csv(root / paths.COMPRESS / "predictions.csv")
    labels = json.loads((root / paths.LABEL_MAP).read_text())["labels"]
    assert [labels[i] for i in predicted] == saved["int8_predicted"].tolist()


def test_ffn_pruning_removes_the_requested_share_of_neurons_and_the_model_shrinks(compressed):
    root, result = compressed
    details = result["details"]["prune"]
    assert details["ffn_neurons_removed"] == pytest.approx(1 - 26 / 64, abs=1e-4)  # 64 neurons a layer, round(64 * 0.4) = 26 kept
    assert details["recovery"]["steps"] == 2 * int(np.ceil(90 / 8))
    config = json.loads((root / paths.COMPRESSED / "pruned/config.json").read_text())
    assert config["intermediate_size"] == 26
    weights = load_file(root / paths.COMPRESSED / "pruned/model.safetensors")
    assert weights["bert.encoder.layer.1.intermediate.dense.weight"].shape == (26, 32)
    assert weights["bert.encoder.layer.1.output.dense.weight"].shape == (32, 26)
    row, teacher = result["models"]["prune"], result["models"]["teacher"]
    assert row["parameters"] == teacher["parameters"] - 2 * (2 * 38 * 32 + 38)  # per layer: 38 rows, 38 columns, 38 biases
    gone = 1 - row["parameters"] / teacher["parameters"]
    assert gone <= details["sparsity_all_parameters"] < gone + 0.005  # + the few weights that are exactly 0 (the [PAD] embedding)


def test_unstructured_pruning_reaches_the_sparsity_and_recovery_keeps_the_zeros(trained_workdir, tiny_model):
    task = get_task("text-classification")
    teacher = task.models.load_trained(str(paths.MODEL), False)
    model = task.models.load_trained(str(paths.MODEL), False)
    finish = prune.unstructured(model, 0.6)
    train = pd.read_parquet(paths.PREPARED / "train.parquet")
    layout = json.loads(paths.LABEL_MAP.read_text())
    logits = np.zeros((len(train), 3))
    processor = task.models.load_processor(str(paths.MODEL), False)
    distill.train_on_teacher(model, task.models.dataset(train, layout, processor), logits, task.models.collator(processor),
                             Distill(learning_rate=3e-3, batch_size=8), 1, 0, "cpu", False, trained_workdir / "work")
    finish()
    measured = prune.sparsity(teacher, model)
    assert measured["sparsity_pruned_layers"] == pytest.approx(0.6, abs=0.002)
    assert measured["ffn_neurons_removed"] == 0 and 0.2 < measured["sparsity_all_parameters"] < 0.6  # embeddings are not pruned
    assert torch.equal(model.classifier.weight != 0, torch.ones_like(model.classifier.weight, dtype=torch.bool))
    assert not torch.equal(model.classifier.weight, teacher.classifier.weight)  # it did train


def test_distillation_keeps_every_other_layer_ending_with_the_top_one(compressed):
    root, result = compressed
    assert result["details"]["distill"]["layers_kept"] == [1]
    config = json.loads((root / paths.COMPRESSED / "distilled/config.json").read_text())
    assert config["num_hidden_layers"] == 1
    row = result["models"]["distill"]
    assert row["parameters"] < result["models"]["teacher"]["parameters"]
    assert row["accuracy"] >= 0.8  # one keyword carries the label; the student learns it from the teacher


def test_distillation_moves_the_student_towards_the_teacher(trained_workdir, tiny_model):
    params = _params(tiny_model)
    task = get_task(params.task)
    teacher = task.models.load_trained(str(paths.MODEL), False).eval()
    processor = task.models.load_processor(str(paths.MODEL), False)
    train = pd.read_parquet(paths.PREPARED / "train.parquet")
    layout = json.loads(paths.LABEL_MAP.read_text())
    teacher_logits = np.log(task.predict_proba(teacher, processor, train, layout, 64))

    def kl_to_teacher(model):
        student = np.log(task.predict_proba(model, processor, train, layout, 64))
        return float(np.mean(np.sum(np.exp(teacher_logits) * (teacher_logits - student), axis=1)))

    student = distill.make_student(teacher, [0])
    before = kl_to_teacher(student)
    distill.train_on_teacher(student, task.models.dataset(train, layout, processor), teacher_logits, task.models.collator(processor),
                             Distill(alpha=0.0, learning_rate=3e-3, batch_size=8), 2, 0, "cpu", False, trained_workdir / "work")
    after = kl_to_teacher(student)
    assert after < 0.5 * before, (before, after)


def test_kd_loss_is_cross_entropy_at_alpha_one_and_zero_when_student_matches_teacher():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    labels = torch.tensor([0, 2])
    assert distill.kd_loss(logits, logits * 5, labels, 2.0, 1.0) == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    assert distill.kd_loss(logits, logits, labels, 3.0, 0.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("section, message", [
    ({"methods": ["int8", "int4"]}, r"compress\.methods\.1: Input should be 'int8', 'prune' or 'distill'"),
    ({"prune": {"sparsity": 1.0}}, r"compress\.prune\.sparsity: Input should be less than 1"),
    ({"prune": {"structure": "heads"}}, r"compress\.prune\.structure: Input should be 'ffn_neurons', 'unstructured' or 'channels'"),
    ({"teacher": "tfidf"}, r"compress\.teacher 'tfidf' is not a fine-tuned model; expected 'best' or one of \['primary', 'seed1'\]"),
    ({"distill": {"layers": [1, 0]}}, r"compress\.distill\.layers \[1, 0\] must be increasing layer indices in \[0, 1\]"),
])
def test_bad_compress_params_are_refused_before_any_work(trained_workdir, tiny_model, section, message):
    with pytest.raises(UserError, match=message):
        compress.run(_params(tiny_model, **section))
    assert not paths.COMPRESSED.exists()


def test_a_teacher_of_another_label_map_or_a_missing_gpu_is_named_before_any_work(trained_workdir, tiny_model):
    label_map = json.loads((paths.MODEL / "label_map.json").read_text())
    (paths.MODEL / "label_map.json").write_text(json.dumps({**label_map, "labels": ["neg", "neu", "pos"]}))
    with pytest.raises(UserError, match=r"teacher 'primary' was trained on labels \['neg', 'neu', 'pos'\], the prepared data has"):
        compress.run(_params(tiny_model))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="train.device is 'cuda' but no CUDA GPU is visible"):
            compress.run(load(tiny_params(tiny_model, train={"device": "cuda"}, compress={"teacher": "primary"})))
    assert not paths.COMPRESSED.exists()


def test_the_int8_kernels_are_named_from_the_cpu_flags_and_a_cap_is_recorded(monkeypatch):
    flags = set(open("/proc/cpuinfo").read().split())
    found = quantize.cpu()
    assert found["int8_instructions"] == ("AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-VNNI" if "avx_vnni" in flags
                                          else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "unknown")
    assert found["quantized_engine"] == torch.backends.quantized.engine
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("FBGEMM_ENABLE_INSTRUCTIONS", "AVX2")  # how docs/benchmarks/compression.md emulates an older CPU
    assert quantize.cpu()["capped_by"] == {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
