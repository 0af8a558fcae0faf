"""An image encoder and a text encoder fused into one classifier (the image + text task's model).

- Encoders: an image classifier of the image task with its last linear layer removed (finetune/models/images.py as_encoder:
  its pooled features), and a Hugging Face text encoder whose token states are mean-pooled over the attention mask
  (how sentence encoders such as MiniLM are trained to be read).
- Fusion (`spec["fusion"]`), each encoder first projected to fusion_size:
  concat: GELU(W [image; text]);
  gated: a gated multimodal unit (Arevalo et al. 2017, arXiv:1702.01992): h = z * tanh(W_i image) + (1 - z) * tanh(W_t text),
  z = sigmoid(W_z [image; text]) per feature, so the model learns, per example and feature, which modality to trust.
  One modality (a unimodal baseline): GELU(W features), nothing to fuse.
- Head: dropout, Linear(fusion_size, fusion_size), GELU, dropout, Linear(fusion_size, labels): the hidden layer lets a
  concat fusion express interactions ("is there a red shape?" needs the colour seen AND the colour asked).
- Per-encoder strategies: `encoder_strategies` ({"image_encoder": "frozen", "text_encoder": "lora"}), applied by
  finetune/training/strategies.py to each encoder; the fusion and the head always train. LoRA adapters are merged before saving.
Saved as one model.safetensors + the spec, with each encoder's architecture (image/: a spec or a config; text/: its config
and tokenizer), rebuilt without downloading or unpickling anything.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from finetune.errors import UserError
from finetune.models.images import rebuild_encoder, save_architecture
from finetune.models.texts import DROPOUT_NAMES


def text_encoder(source: str, train, outline: bool = False) -> nn.Module:
    """The pretrained text model without a head (BertModel...), train.dropout applied; `outline`: its config only."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(source, trust_remote_code=train.trust_remote_code)
    if train.dropout is not None:
        for name in DROPOUT_NAMES:
            if hasattr(config, name):
                setattr(config, name, train.dropout)
    if outline:
        return AutoModel.from_config(config, trust_remote_code=train.trust_remote_code)
    return AutoModel.from_pretrained(source, config=config, use_safetensors=True, trust_remote_code=train.trust_remote_code)


def _text_size(encoder: nn.Module) -> int:
    size = getattr(getattr(encoder, "config", None), "hidden_size", None)
    if not isinstance(size, int):
        raise UserError(f"the text encoder {type(encoder).__name__} does not say its output size (no config.hidden_size)")
    return size


class ImageTextClassifier(nn.Module):
    """forward(pixel_values, input_ids, attention_mask, [token_type_ids], labels) -> logits (and the loss with labels)."""

    def __init__(self, image: nn.Module | None, text: nn.Module | None, spec: dict):
        super().__init__()
        self.spec = spec
        self.image_encoder, self.text_encoder = image, text
        size, dropout = spec["fusion_size"], spec["dropout"] if spec["dropout"] is not None else 0.1
        inputs = {}
        if image is not None:
            inputs["image"] = spec["image_features"]  # what the image classifier's removed head read (images.as_encoder)
        if text is not None:
            inputs["text"] = spec.setdefault("text_features", _text_size(text))
        self.gated = spec["fusion"] == "gated" and len(inputs) == 2
        self.project = nn.ModuleDict({side: nn.Linear(n, size) for side, n in inputs.items()})
        self.gate = nn.Linear(sum(inputs.values()), size) if self.gated else None
        self.mix = None if self.gated else nn.Linear(size * len(inputs), size)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, size), nn.GELU(), nn.Dropout(dropout), nn.Linear(size, len(spec["labels"])))
        # what finetune/training/strategies.py trains of each encoder
        self.part_strategies = {name: strategy for name, strategy in spec["encoder_strategies"].items() if getattr(self, name) is not None}

    def encode(self, pixel_values=None, input_ids=None, attention_mask=None, token_type_ids=None) -> dict[str, torch.Tensor]:
        features = {}
        if self.image_encoder is not None:
            features["image"] = self.image_encoder(pixel_values=pixel_values).logits
        if self.text_encoder is not None:
            extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            states = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            features["text"] = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
        return features

    def fuse(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.gated:
            z = torch.sigmoid(self.gate(torch.cat([features["image"], features["text"]], dim=-1)))
            return z * torch.tanh(self.project["image"](features["image"])) + (1 - z) * torch.tanh(self.project["text"](features["text"]))
        return F.gelu(self.mix(torch.cat([self.project[side](features[side]) for side in self.project], dim=-1)))

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, token_type_ids=None, labels=None):
        logits = self.head(self.fuse(self.encode(pixel_values, input_ids, attention_mask, token_type_ids)))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def state_dict(self, *args, **kwargs):
        # contiguous copies (a channels-last CNN's weights): safetensors, the Trainer's checkpoints too, writes raw buffers
        return {name: value.contiguous() for name, value in super().state_dict(*args, **kwargs).items()}


def _merged(module: nn.Module | None) -> nn.Module | None:
    """An encoder with LoRA adapters, merged (what every later stage loads); others as they are."""
    return module.merge_and_unload() if hasattr(module, "merge_and_unload") else module


def save(model: ImageTextClassifier, folder: Path) -> dict:
    """Write model.safetensors and each encoder's architecture into folder; returns the spec to store beside them."""
    from safetensors.torch import save_file

    model.image_encoder, model.text_encoder = _merged(model.image_encoder), _merged(model.text_encoder)
    if model.image_encoder is not None:
        save_architecture(model.image_encoder, folder / "image")
    if model.text_encoder is not None:
        model.text_encoder.config.save_pretrained(str(folder / "text"))
    save_file(model.state_dict(), folder / "model.safetensors")
    return model.spec


def rebuild(folder: Path, spec: dict, trust_remote_code: bool) -> ImageTextClassifier:
    """The saved model's architecture with random weights (load_trained fills them in)."""
    from transformers import AutoConfig, AutoModel

    image = rebuild_encoder(folder / "image", trust_remote_code) if (folder / "image").is_dir() else None
    text = None
    if (folder / "text" / "config.json").is_file():
        config = AutoConfig.from_pretrained(folder / "text", trust_remote_code=trust_remote_code)
        text = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    return ImageTextClassifier(image, text, spec)
