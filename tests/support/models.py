"""Tiny models built from a config at test time and saved, then loaded through the same from_pretrained path users use: a
2-layer BERT, a 2-layer Llama or GPT-2 with a byte-level BPE tokenizer, a 2-stage Hugging Face ResNet, a 2-layer Whisper."""
from __future__ import annotations

from pathlib import Path

from tests.support.data import FILLER, LM_TEXT, WORDS


def build_tiny_bert(folder: Path) -> None:
    """A 2-layer BERT (hidden 32) with a word-level vocabulary of the words make_rows uses, saved to folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for ws in WORDS.values() for w in ws} | set(FILLER)),
             *letters, *(f"##{c}" for c in letters), *".,!?@#'-"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)


def build_tiny_causal_lm(folder: Path, architecture: str = "llama") -> None:
    """A 2-layer causal LM (llama or gpt2, hidden 32) with a byte-level BPE tokenizer trained on LM_TEXT, whose EOS
    (and BOS, PAD) is <|endoftext|>, saved to folder like a user's model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([LM_TEXT] * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.save_pretrained(folder)
    size, eos = len(fast), fast.eos_token_id
    torch.manual_seed(0)
    if architecture == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=size, n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=eos, eos_token_id=eos))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                             num_key_value_heads=1, max_position_embeddings=128, bos_token_id=eos, eos_token_id=eos,
                                             pad_token_id=eos, tie_word_embeddings=True))
    model.save_pretrained(folder)


CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_chat_lm(folder: Path) -> None:
    """A 2-layer Llama whose byte-level BPE tokenizer has ChatML's <|im_start|> / <|im_end|> (its EOS and pad) and the
    ChatML chat template, saved to folder like a user's instruct model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([LM_TEXT] * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", bos_token="<|im_start|>", pad_token="<|im_end|>")
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    eos = fast.eos_token_id
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, max_position_embeddings=256, bos_token_id=fast.bos_token_id, eos_token_id=eos,
                                 pad_token_id=eos, tie_word_embeddings=True)).save_pretrained(folder)


def build_tiny_resnet(folder: Path) -> None:
    """A 2-stage Hugging Face ResNet (BatchNorm in every block) and its image processor, saved to folder."""
    import torch
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    torch.manual_seed(0)
    ResNetForImageClassification(config).save_pretrained(folder)
    ConvNextImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]).save_pretrained(folder)


def build_tiny_whisper(folder: Path) -> None:
    """A 2-layer Whisper (width 16) reading up to 2 s (100 encoder positions), with its 80-band feature extractor, saved
    to folder like a user's speech recognition checkpoint."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_source_positions=100,
                           max_target_positions=16, decoder_start_token_id=1, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(folder)


def build_tiny_speech_whisper(folder: Path) -> None:
    """A 2-layer Whisper (width 32) reading up to 2 s, with a character-level Whisper tokenizer (Whisper's special tokens,
    the byte-level space and a-z: transformers rebuilds a Whisper tokenizer as byte-level BPE), its feature extractor and
    an English-only generation config: a user's speech recognition checkpoint."""
    import string

    import torch
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    # the special tokens last, as Whisper's: generate counts every id above <|notimestamps|> as a timestamp
    tokens = ("\u0120", *string.ascii_lowercase, "<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")
    end, start, notimestamps = len(tokens) - 3, len(tokens) - 2, len(tokens) - 1
    characters = Tokenizer(BPE({token: i for i, token in enumerate(tokens)}, [], unk_token="<|endoftext|>"))
    characters.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    characters.decoder = decoders.ByteLevel()
    characters.save(str(folder / "characters.json"))
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(folder / "characters.json"), bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                     unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    (folder / "characters.json").unlink()
    special = {"decoder_start_token_id": start, "pad_token_id": end, "bos_token_id": end, "eos_token_id": end}
    config = WhisperConfig(vocab_size=len(tokens), num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=100,
                           max_target_positions=24, suppress_tokens=[], begin_suppress_tokens=[], **special)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(**special, no_timestamps_token_id=notimestamps, is_multilingual=False, suppress_tokens=[],
                                               begin_suppress_tokens=[], max_length=24)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(folder)
