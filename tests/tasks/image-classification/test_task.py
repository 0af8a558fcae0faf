"""The image task (finetune/tasks/image-classification/) through the real stages on tiny generated images:
every data layout, bad images quarantined with their reason, odd modes fixed, seeded augmentation,
BatchNorm statistics, strategies on a CNN, predictions in row order, models loaded without pickle."""
import base64
import importlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from finetune import paths
from finetune.config.sections import Train
from finetune.errors import UserError
from finetune.io import read_json
from finetune.tasks import get_task
from finetune.training.fit import fit
from stages import ingest, member, preprocess
from tests.support.data import make_images, write_image_folder
from tests.support.params import load, tiny_image_params

TASK = get_task("image-classification")
SOURCES = importlib.import_module("finetune.tasks.image-classification.sources")
from finetune.models import images


def _params(model, **sections):
    return load(tiny_image_params(str(model), **sections))


def _png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=options.pop("format", "PNG"), **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_project(tmp_path_factory, tiny_image_model):
    """ingest + preprocess of 30 images per class (read-only: tests copy it)."""
    import os

    root = tmp_path_factory.mktemp("images")
    write_image_folder(root / "data/raw/images", 30)
    before = os.getcwd()
    os.chdir(root)
    try:
        params = _params(tiny_image_model)
        ingest.run(params)
        preprocess.run(params)
    finally:
        os.chdir(before)
    return root


@pytest.fixture
def image_workdir(image_project, workdir):
    shutil.copytree(image_project, workdir, dirs_exist_ok=True)
    return workdir


def test_an_image_folder_and_tables_of_paths_in_every_format_give_the_same_rows(workdir, tiny_image_model):
    folder = write_image_folder(workdir / "data/raw/images", 4)
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints/red_000-checkpoint.png").write_bytes((folder / "red/red_000.png").read_bytes())
    (folder / "red/.DS_Store").write_bytes(b"\x00junk")
    (folder / "README.md").write_text("my images")
    summary = ingest.run(_params(tiny_image_model))
    assert summary["rows_kept"] == 12 and summary["labels"] == {"blue": 4, "green": 4, "red": 4}
    assert summary["ignored"] == {"hidden files or folders": 2, "files outside class folders": 1}
    from_folder = pd.read_parquet(paths.INGESTED)
    assert from_folder["origin"].str.startswith("data/raw/images/").all()
    assert (from_folder["input"] == [(workdir / o).read_bytes() for o in from_folder["origin"]]).all()  # the file's own bytes

    listed = pd.DataFrame({"picture": [o.removeprefix("data/raw/") for o in from_folder["origin"]], "kind": from_folder["label"]})
    writers = {".csv": lambda p: listed.to_csv(p, index=False), ".jsonl": lambda p: listed.to_json(p, orient="records", lines=True),
               ".parquet": lambda p: listed.to_parquet(p)}
    for suffix, write in writers.items():
        write(workdir / f"data/raw/list{suffix}")
        params = _params(tiny_image_model, data={"source": f"data/raw/list{suffix}", "image_column": "picture", "label_column": "kind"})
        assert ingest.run(params)["rows_kept"] == 12
        table = pd.read_parquet(paths.INGESTED)
        assert table["input"].tolist() == from_folder["input"].tolist() and table["label"].tolist() == from_folder["label"].tolist()
        assert table["origin"].tolist() == listed["picture"].tolist()  # as written in the table


def _bad_and_odd_images(folder):
    colour = Image.new("RGB", (20, 10), (200, 40, 40))
    jpeg = _png(colour, format="JPEG")
    rotated = Image.Exif()
    rotated[0x0112] = 6  # EXIF orientation: the camera was turned; shown 10 wide, 20 high
    files = {
        "empty.png": b"", "noise.png": np.random.default_rng(0).bytes(300), "truncated.jpg": jpeg[: len(jpeg) // 2],
        "notes.txt": b"not a picture", "bomb.png": _png(Image.new("L", (200, 200))),
        "grey.png": _png(Image.new("L", (9, 9), 128)), "grey_alpha.png": _png(Image.new("LA", (9, 9), (50, 0))),
        "palette.png": _png(Image.new("P", (9, 9), 3)), "rgba.png": _png(Image.new("RGBA", (9, 9), (10, 20, 30, 0))),
        "cmyk.jpg": _png(Image.new("CMYK", (9, 9), (0, 255, 255, 0)), format="JPEG"),
        "deep.png": _png(Image.fromarray(np.full((9, 9), 40000, dtype=np.uint16))),
        "dot.png": _png(Image.new("RGB", (1, 1), (0, 0, 255))), "strip.png": _png(Image.new("RGB", (300, 7), (0, 255, 0))),
        "turned.jpg": _png(colour, format="JPEG", exif=rotated),
    }
    for name, data in files.items():
        (folder / "red" / name).write_bytes(data)


def test_bad_images_are_quarantined_with_their_reason_and_odd_ones_are_fixed(workdir, tiny_image_model, tmp_path_factory):
    folder = write_image_folder(workdir / "data/raw/images", 4)
    _bad_and_odd_images(folder)
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "secret.png"
    elsewhere.write_bytes(_png(Image.new("RGB", (9, 9))))
    (folder / "red/linked.png").symlink_to(elsewhere)
    params = _params(tiny_image_model, data={"on_bad_rows": "skip", "max_image_pixels": 10_000})
    summary = ingest.run(params)

    quarantine = pd.read_csv(paths.QUARANTINE / "ingest.csv")
    problems = dict(zip(quarantine["content"].str.rsplit("/", n=1).str[-1], quarantine["problem"]))
    assert problems["empty.png"] == "empty file"
    assert problems["noise.png"].startswith("not an image of a format read here (cannot identify image file; formats: PNG, JPEG")
    assert problems["truncated.jpg"].startswith("truncated or corrupt image")
    assert problems["notes.txt"] == "not an image file (.txt)"
    assert problems["bomb.png"].startswith("decompression bomb")
    assert problems["linked.png"].startswith(f"data/raw/images/red/linked.png (a link to {elsewhere}) is outside data/raw/")
    assert len(problems) == 6 and summary["rows_kept"] == 12 + 9
    assert sum(n for reason, n in summary["dropped"].items() if reason.startswith("bad row")) == 6

    preprocess.run(params)
    prepared = pd.concat(pd.read_parquet(paths.PREPARED / f"{split}.parquet") for split in ("train", "val", "test"))
    layout = read_json(paths.LABEL_MAP)
    assert layout["pixels"] == {"height": 16, "width": 16, "channels": 3}  # some images are colour: all get 3 channels
    assert all(len(p) == 16 * 16 * 3 for p in prepared["pixels"])  # every mode and size became 16x16 RGB
    by_name = {origin.rsplit("/", 1)[-1]: row for origin, row in zip(prepared["origin"], prepared.itertuples())}
    assert (by_name["turned.jpg"].width, by_name["turned.jpg"].height) == (10, 20)  # EXIF rotation applied
    rgba = np.frombuffer(by_name["rgba.png"].pixels, dtype=np.uint8).reshape(16, 16, 3)
    assert (rgba == 255).all()  # fully transparent: composited on white, not on whatever the hidden RGB was
    deep = np.frombuffer(by_name["deep.png"].pixels, dtype=np.uint8).reshape(16, 16, 3)
    assert abs(int(deep[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1  # 16-bit scaled to 8 bits, not clipped

    with pytest.raises(UserError, match=r"data/raw/images row \d+ \(line \d+\): .*; 6 bad row\(s\) in all"):
        ingest.run(_params(tiny_image_model, data={"on_bad_rows": "error", "max_image_pixels": 10_000}))


def test_augmentation_is_seeded_per_row_and_epoch_and_touches_only_train(image_workdir, tiny_image_model):
    params = _params(tiny_image_model, preprocess={"augment": {"rotation": 20, "color_jitter": 0.3, "policy": "trivial"}})
    train = pd.read_parquet(paths.PREPARED / "train.parquet")
    layout, processor = read_json(paths.LABEL_MAP), TASK.models.load_processor(str(tiny_image_model), False)
    first, again = (TASK.models.dataset(train, layout, processor, params.preprocess) for _ in range(2))
    state = torch.random.get_rng_state()
    assert np.array_equal(first.augmented(3, 0), again.augmented(3, 0))  # same seed, row and epoch: same pixels
    assert torch.equal(state, torch.random.get_rng_state())  # the global stream (dropout, shuffling) is untouched
    assert not np.array_equal(first.augmented(3, 0), first.augmented(3, 1))  # a new draw every epoch
    assert not np.array_equal(first.augmented(3, 0), first.augmented(4, 0)[::-1])
    other = TASK.models.dataset(train, layout, processor, _params(tiny_image_model, preprocess={"augment": {"seed": 9}}).preprocess)
    assert not np.array_equal(first.augmented(3, 0), other.augmented(3, 0))
    plain = TASK.models.dataset(train, layout, processor)  # val / test / prediction: never augmented
    stored = np.frombuffer(train["pixels"].iloc[3], dtype=np.uint8).reshape(16, 16, 3)
    assert np.array_equal(plain.augmented(3, 0), stored) and np.array_equal(plain.augmented(3, 5), stored)
    item = first[3]
    assert item["pixel_values"].shape == (3, 16, 16) and item["pixel_values"].dtype == torch.float32
    assert item["pixel_values"].mean().abs() < 4  # normalised with the model's own mean 0.5 / std 0.25


def _fit(params):
    splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val")}
    return fit(get_task(params.task), params, splits, read_json(paths.LABEL_MAP), paths.MODEL, paths.TRAIN_LIVE, "test")


def _batchnorm_changes(tiny_image_model) -> dict[str, bool]:
    """For every BatchNorm running statistic of the pretrained file: did training change it (bit for bit)?"""
    before, after = load_file(tiny_image_model / "model.safetensors"), load_file(paths.MODEL / "model.safetensors")
    return {name: not torch.equal(value, after[name]) for name, value in before.items() if name.endswith(("running_mean", "running_var"))}


def test_frozen_blocks_keep_their_batchnorm_statistics_bit_for_bit(image_workdir, tiny_image_model):
    summary = _fit(_params(tiny_image_model, train={"strategy": "partial", "freeze_layers": 1, "epochs": 2}))
    changed = _batchnorm_changes(tiny_image_model)
    frozen = [name for name in changed if name.startswith(("resnet.embedder.", "resnet.encoder.stages.0."))]
    trained = [name for name in changed if name.startswith("resnet.encoder.stages.1.")]
    assert frozen and trained
    assert not any(changed[name] for name in frozen)  # model.train() in every step did not switch them back on
    assert all(changed[name] for name in trained)
    norms = summary["parameters"]["batchnorm"]
    assert norms["layers"] == len(changed) // 2 and norms["frozen_statistics"] == len(frozen) // 2

    _fit(_params(tiny_image_model, train={"strategy": "full", "batchnorm": "freeze", "epochs": 2}))
    assert not any(_batchnorm_changes(tiny_image_model).values())  # batchnorm: freeze keeps even trained blocks' statistics
    weights = load_file(paths.MODEL / "model.safetensors")
    assert not torch.equal(weights["resnet.embedder.embedder.convolution.weight"],
                           load_file(tiny_image_model / "model.safetensors")["resnet.embedder.embedder.convolution.weight"])


def test_strategies_freeze_what_they_say_on_a_cnn(image_workdir, tiny_image_model):
    pretrained = load_file(tiny_image_model / "model.safetensors")
    summary = _fit(_params(tiny_image_model, train={"strategy": "linear_probe", "epochs": 1}))
    saved = load_file(paths.MODEL / "model.safetensors")
    body = [name for name in pretrained if name.startswith("resnet.") and not name.endswith("num_batches_tracked")]
    assert all(torch.equal(pretrained[name], saved[name]) for name in body)  # the whole body, BatchNorm statistics included
    groups = {g["group"]: g for g in summary["parameters"]["groups"]}
    assert list(groups) == ["stem", "layer.0", "layer.1", "head"] and summary["parameters"]["trainable"] == groups["head"]["parameters"]

    with pytest.raises(UserError, match=r"train.lora.target_modules \['query'\] are not modules of .*LoRA can adapt there .*'convolution'"):
        _fit(_params(tiny_image_model, train={"strategy": "lora", "lora": {"target_modules": ["query"]}}))
    summary = _fit(_params(tiny_image_model, train={"strategy": "lora", "epochs": 1, "learning_rate": 1e-2,
                                                    "lora": {"rank": 2, "target_modules": ["convolution"]}}))
    merged = load_file(paths.MODEL / "model.safetensors")
    assert not any("lora" in name for name in merged) and summary["parameters"]["trainable_share"] < 1
    assert not torch.equal(merged["resnet.encoder.stages.1.layers.0.layer.0.convolution.weight"],
                           pretrained["resnet.encoder.stages.1.layers.0.layer.0.convolution.weight"])


def test_adaptive_opens_a_cnns_groups_through_its_anatomy_batchnorm_statistics_included(image_workdir, tiny_image_model):
    """unfreeze_on_plateau on the tiny ResNet: the saved (best) model moved exactly the groups open before its evaluation,
    weights and BatchNorm running statistics alike; a group still closed kept both bit for bit."""
    pretrained = load_file(tiny_image_model / "model.safetensors")
    summary = _fit(_params(tiny_image_model, train={"strategy": "adaptive", "epochs": 4, "learning_rate": 1e-5, "warmup_ratio": 0.0,
                                                    "early_stopping": {"metric": "loss", "patience": 0},
                                                    "adaptive": {"patience": 1, "min_delta": 1e-3}}))
    timeline = summary["parameters"]["adaptive"]["timeline"]
    assert len(timeline[-1]["trainable"]) > 1, timeline  # a val loss moving by less than min_delta opened groups
    best = next(i for i, row in enumerate(timeline) if row["step"] == summary["best_step"])
    open_before = timeline[best - 1]["trainable"] if best else ["head"]
    saved = load_file(paths.MODEL / "model.safetensors")
    for group, prefix in {"stem": "resnet.embedder.", "layer.0": "resnet.encoder.stages.0.", "layer.1": "resnet.encoder.stages.1."}.items():
        moved = [name for name in pretrained if name.startswith(prefix) and not name.endswith("num_batches_tracked")
                 and not torch.equal(pretrained[name], saved[name])]
        assert bool(moved) == (group in open_before), (group, open_before, moved[:3])
        if group in open_before:
            assert any(name.endswith("running_mean") for name in moved)
    assert best and len(open_before) < 4, (best, open_before)  # the best model saw an opened group and a closed one


def test_mixup_and_cutmix_train_on_soft_labels(image_workdir, tiny_image_model):
    params = _params(tiny_image_model, preprocess={"augment": {"mixup": 0.4, "cutmix": 1.0}}, train={"epochs": 4})
    mix = TASK.models.batch_augmenter(params.preprocess, 3)
    batch = TASK.models.collator(None)([TASK.models.dataset(pd.read_parquet(paths.PREPARED / "train.parquet"), read_json(paths.LABEL_MAP),
                                              TASK.models.load_processor(str(tiny_image_model), False))[i] for i in range(8)])
    mixed = mix(batch)
    assert mixed["labels"].shape == (8, 3) and torch.allclose(mixed["labels"].sum(dim=1), torch.ones(8))
    assert _fit(params)["val"]["accuracy"] > 0.6  # still learns the colours (3 classes: chance is 1/3)


def test_label_smoothing_trains_a_torchvision_cnn(image_workdir, tiny_image_model):
    # regression: the Trainer's own label smoother reads model.config, which a torchvision CNN (the default EfficientNet)
    # has not: any image run with train.label_smoothing > 0 died at the start (a search trial did); our loss smooths there
    import torchvision
    from safetensors.torch import save_file

    (image_workdir / "models/pretrained").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_file(torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict(),
              image_workdir / "models/pretrained/mobilenet_v3_small.safetensors")
    params = _params(tiny_image_model, train={"model": "models/pretrained/mobilenet_v3_small.safetensors", "epochs": 1, "label_smoothing": 0.3})
    summary = _fit(params)
    # val loss is the smoothed cross-entropy too: never below the entropy of the smoothed target (0.8, 0.1, 0.1), 0.639 nats
    assert summary["steps"] > 0 and summary["val"]["loss"] > 0.63, summary["val"]


def test_predictions_come_back_in_row_order_and_the_pixels_member_reloads(image_workdir, tiny_image_model):
    params = _params(tiny_image_model, train={"epochs": 2})
    _fit(params)
    test = pd.read_parquet(paths.PREPARED / "test.parquet")
    model, processor = TASK.models.load_trained(str(paths.MODEL), False), TASK.models.load_processor(str(paths.MODEL), False)
    layout = read_json(paths.MODEL / "label_map.json")
    together = TASK.predict_proba(model, processor, test, layout, batch_size=7)
    one_by_one = np.concatenate([TASK.predict_proba(model, processor, test.iloc[[i]], layout, batch_size=1) for i in range(len(test))])
    assert np.allclose(together, one_by_one, atol=1e-5)
    assert not np.allclose(together, together[::-1])

    summary = member.run(params, "pixels")
    assert summary["test"]["accuracy"] > 0.9  # the colour is in the pixels
    reloaded = TASK.classical.load(paths.MEMBER_MODELS / "pixels")
    saved = pd.read_parquet(paths.MEMBER_REPORTS / "pixels/probabilities.parquet")
    assert np.allclose(reloaded.predict_proba(test), saved[saved["split"] == "test"].filter(like="prob_").to_numpy())


def test_the_builtin_efficientnet_carries_real_imagenet_weights(tiny_image_model):
    from sklearn.datasets import load_sample_image

    source = TASK.models.source("builtin:efficientnet-lite0")
    net = images._build_net({"family": "efficientnet-lite", "architecture": "efficientnet-lite0", "num_classes": 1000, "image_size": 224})
    net.load_state_dict(images._read_weights(Path(source)))
    flower = torch.from_numpy(np.asarray(Image.fromarray(load_sample_image("flower.jpg")).resize((224, 224)))).permute(2, 0, 1)
    with torch.no_grad():
        top = net.eval()((flower.float() / 255 - 0.5)[None] / 0.5).softmax(-1)[0].topk(5).indices.tolist()
    assert 985 in top  # ImageNet's "daisy": random weights would not know a flower
    model = TASK.models.load_model(source, {"labels": ["a", "b"], "pixels": {"height": 32}}, Train(model="builtin:efficientnet-lite0"))
    assert model.net._fc.out_features == 2 and torch.equal(model.net._conv_stem.weight, net._conv_stem.weight)


def test_torchvision_weights_load_without_unpickling_and_bad_files_are_named(workdir, tiny_image_model):
    import torchvision
    from safetensors.torch import save_file

    (workdir / "models/pretrained").mkdir(parents=True)
    reference = torchvision.models.get_model("resnet18", weights=None)
    torch.save(reference.state_dict(), workdir / "models/pretrained/resnet18-f37072fd.pth")
    save_file(reference.state_dict(), workdir / "models/pretrained/resnet18.safetensors")
    train = Train(model="models/pretrained/resnet18.safetensors")
    for name in ("resnet18-f37072fd.pth", "resnet18.safetensors"):
        model = TASK.models.load_model(f"models/pretrained/{name}", {"labels": ["a", "b", "c"], "pixels": {"height": 32}}, train)
        assert model.net.fc.out_features == 3 and torch.equal(model.net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.save({"model": reference}, workdir / "models/pretrained/resnet18-pickled.pth")  # a whole module: needs code to unpickle
    with pytest.raises(UserError, match="resnet18-pickled.pth: not a plain state dict of tensors"):
        TASK.models.load_model("models/pretrained/resnet18-pickled.pth", {"labels": ["a", "b"], "pixels": {"height": 32}}, train)
    (workdir / "models/pretrained/mynet.pth").write_bytes(b"")
    assert "'mynet' is not a torchvision classification architecture" in TASK.models.check("models/pretrained/mynet.pth")


def test_a_vit_given_another_image_size_is_refused_before_training(workdir, tiny_image_model):
    from transformers import ViTConfig, ViTForImageClassification

    vit = workdir / "models/pretrained/tiny-vit"
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=32)).save_pretrained(vit)
    write_image_folder(workdir / "data/raw/images", 4)
    params = _params(tiny_image_model, train={"model": str(vit)})
    ingest.run(params)
    with pytest.raises(UserError, match=r"preprocess.image_size is 16 but .*tiny-vit \(vit\) reads 32x32 images .*set preprocess.image_size: 32"):
        preprocess.run(params)
    assert not paths.PREPARED.exists()


def test_images_render_as_embedded_thumbnails():
    image = make_images(1, size=8)[0][1]
    rendered = TASK.render(_png(image))
    assert rendered.startswith('<img alt="image" src="data:image/png;base64,')
    shown = Image.open(io.BytesIO(base64.b64decode(rendered.split(",", 1)[1].rstrip('">'))))
    assert min(shown.size) >= 32  # tiny images are enlarged to be visible
    assert json.loads(json.dumps(TASK.display(pd.DataFrame({"origin": ["data/raw/x.png"]})).tolist())) == ["data/raw/x.png"]


def test_an_interrupted_fine_tune_of_a_torchvision_model_resumes_to_the_same_weights(image_workdir, tiny_image_model):
    import torchvision
    from safetensors.torch import save_file
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt  # Ctrl-C right after the first checkpoint was written

    (image_workdir / "models/pretrained").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_file(torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict(),
              image_workdir / "models/pretrained/mobilenet_v3_small.safetensors")
    params = _params(tiny_image_model, train={"model": "models/pretrained/mobilenet_v3_small.safetensors", "epochs": 3, "eval_steps": 5},
                     preprocess={"augment": {"rotation": 10}})
    reference = _fit(params)
    expected = load_file(paths.MODEL / "model.safetensors")
    splits = {name: pd.read_parquet(paths.PREPARED / f"{name}.parquet") for name in ("train", "val")}
    with pytest.raises(KeyboardInterrupt):
        fit(get_task(params.task), params, splits, read_json(paths.LABEL_MAP), paths.MODEL, paths.TRAIN_LIVE, "test", extra_callbacks=(Interrupt(),))
    resumed = _fit(params)
    assert resumed["resumed"] and not reference["resumed"] and resumed["steps"] == reference["steps"]
    weights = load_file(paths.MODEL / "model.safetensors")
    assert all(torch.equal(value, weights[name]) for name, value in expected.items())  # augmentation and dropout replayed exactly


def test_easy_vqa_shapes_labels_come_from_what_the_questions_say():
    attributes = SOURCES._attributes([
        ["what shape is in the image?", "circle", 0], ["is there not a red shape?", "no", 0],  # no "not red" -> red
        ["what color is the triangle?", "blue", 1],  # a "what" question names the shape it asks about
        ["is there a green shape?", "no", 2], ["does the image not contain a rectangle?", "yes", 2],  # nothing certain
    ])
    assert attributes == {0: {"shape": "circle", "colour": "red"}, 1: {"shape": "triangle", "colour": "blue"}}
    with pytest.raises(UserError, match="image 3: its questions disagree on its colour"):
        SOURCES._attributes([["what color is the shape?", "red", 3], ["is there a blue shape?", "yes", 3]])


def test_easy_vqa_shapes_gives_one_label_or_both():
    from finetune.config.params import parse_params

    def read(data):
        raw = {"task": "image-classification", "data": {"source": "builtin:easy-vqa-shapes", **data}}
        return TASK.read(parse_params(raw).data).frame

    both = read({"label_columns": ["shape", "colour"]})
    labels = pd.DataFrame([json.loads(v) for v in both["label"]])
    assert len(both) > 4900 and set(both["split"]) == {"train", "test"}
    assert set(labels["shape"].dropna()) == {"circle", "rectangle", "triangle"} and labels["colour"].nunique() == 8
    assert 0 < labels["colour"].isna().sum() < 500  # a few images: no question tells their colour
    colour = read({"label_column": "colour"})
    assert colour["label"].tolist() == labels["colour"].tolist()
    with pytest.raises(UserError, match=r"no label column\(s\) \['label'\]; its label columns are \['shape', 'colour'\]"):
        read({})


def test_a_re_encoded_brighter_copy_is_a_near_duplicate_and_a_shifted_one_is_not():
    from finetune.data import profile

    def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
        out = io.BytesIO()
        Image.fromarray(array.astype(np.uint8)).save(out, format=fmt, quality=90)
        return out.getvalue()

    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, (40, 40, 3)) for _ in range(5)]
    twin = np.clip(photos[2] * 0.9 + 12, 0, 255)  # darker contrast, brighter floor, saved as JPEG
    shifted = np.roll(photos[3], 6, axis=1)  # the same pixels moved: another picture to a 32 x 32 comparison
    splits = {"train": pd.DataFrame({"id": range(5), "input": [png(p) for p in photos]}),
              "test": pd.DataFrame({"id": [10, 11], "input": [png(twin, "JPEG"), png(shifted)]})}
    vectors, threshold, method = get_task("image-classification").similarity({})
    found = profile.near_duplicates(vectors, splits, threshold, method, seed=0)
    assert found["test_rows_near_train"] == 1 and found["test_rows_near_train_examples"][0][:2] == [10, 2]
    assert found["train_rows_with_a_twin"] == 0
