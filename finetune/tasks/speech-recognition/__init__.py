"""Speech recognition: fine-tune Whisper to transcribe the speech of a domain (its words, its voices).

Data (sources.py): builtin:cards (CMU's cards grammar said by 83 espeak-ng voices, speakers split between train, val
and test) or a table of audio paths (data.audio_column, relative to the table's folder) and transcripts
(data.label_column). Ingest decodes and checks every clip as keyword spotting does (finetune/data/audio.py: unreadable,
too long, silent, clipped or too low a sample rate are bad rows) and stores it as 16 kHz mono WAV; a clip without a
transcript is a bad row. Preprocess (preprocess.py): transcripts' spacing normalised; a clip longer than
preprocess.window_seconds, a transcript with no words, and repeated clips are dropped with the reason; splits by the
data's own (speakers) or seeded; each clip's samples and transcript tokens stored.
Model (models.py): builtin:whisper-tiny-en or a local Whisper folder, WhisperForConditionalGeneration reading a window
of preprocess.window_seconds; every strategy of train.strategy (linear_probe by default: the decoder alone; full: the
encoder too), selected on val loss.
Evaluate (evaluate.py): WER and CER with bootstrap intervals of the fine-tuned model (greedy and beam search) and of the
untouched pretrained model (greedy, at its own 30 s window) on the same test clips, paired; the same before/after on real
human recordings (evaluate.real_speech). Compress (compress.py): int8, WER and clips/s vs fp32. Predict: transcribes a
folder or table of clips; serve takes {"audio": base64}. This task is its own family (the stage verbs live in this
folder: the one sequence-to-sequence task); ensembles and explanations are not offered (a member's transcripts cannot
be averaged, and attributions of a transcript are not built), each stage records why.
"""
from __future__ import annotations

import hashlib
from typing import ClassVar, Literal

import pandas as pd
from pydantic import Field

from finetune.config.sections import STRATEGIES, Evaluate, Preprocess, Train
from finetune.data.audio import AudioAugment, AudioData, check_clips, player, seconds, stored_samples
from finetune.data.sources import ORIGIN, Source
from finetune.errors import Unsupported
from finetune.families.generative import ensemble_section
from finetune.families.task import Task

from . import sources
from .models import SpeechModels


class SpeechData(AudioData):
    BUILTINS: ClassVar[tuple[str, ...]] = (sources.CARDS,)
    source: str = sources.CARDS  # builtin:cards | a table of audio paths and transcripts
    label_column: str = "transcript"  # tables: the column of transcripts


class SpeechPreprocess(Preprocess):
    # seconds of audio the encoder reads (Whisper reads 30): every clip is padded to it, a longer one dropped with the
    # reason. 8 s holds the longest cards phrase (3.7 s at the slowest voice) and every real recording evaluate scores
    window_seconds: int = Field(8, ge=1, le=30)
    # online augmentation of train (finetune/data/audio.py: speed, room, gain, noise, SpecAugment); null = none. Off by
    # default: with the encoder frozen it doubled the test WER on unheard voices and changed no real recording's words
    # (docs/benchmarks/speech-recognition.md)
    augment: AudioAugment | None = None
    # clips of general English (chatterbot-corpus sentences said by espeak-ng's train speakers, needs espeak-ng; 0 = none)
    # added to train alone: rehearsal, so fine-tuning on a narrow domain does not make the decoder forget how to write
    # everything else (400: LibriVox WER 0.113 -> 0.085 for 0.011 -> 0.019 on the domain's test voices, same benchmark)
    rehearsal: int = Field(400, ge=0, le=1000)


class SpeechTrain(Train):
    """Whisper tiny on about 800 synthetic phrases (docs/benchmarks/speech-recognition.md, bench/speech_recipes.py): the
    decoder alone, 3 epochs at 1e-5. Training the encoder too scored the same on unheard synthetic voices and no better on
    real speech, in twice the time; higher rates forgot general English (LibriVox WER 0.25 at 3e-5, 0.85 at 1e-4)."""
    # the model anatomy's head of a Whisper is its decoder (all that follows the encoder's last block): linear_probe
    # trains the decoder alone, whatever the encoder's depth
    strategy: Literal[STRATEGIES] = "linear_probe"
    epochs: float | None = Field(3, gt=0, le=10_000)
    learning_rate: float = Field(1e-5, gt=0, lt=1)
    batch_size: int = Field(16, ge=1, le=65_536)
    eval_batch_size: int = Field(32, ge=1, le=65_536)


class SpeechEvaluate(Evaluate):
    beams: int = Field(4, ge=1, le=32)  # beam search width, scored beside greedy decoding
    max_new_tokens: int = Field(64, ge=1, le=440)  # a transcript longer than this many tokens is cut
    batch_size: int = Field(16, ge=1, le=4096)  # clips per generate call
    # real human recordings scored before and after fine-tuning (the check that nothing was forgotten): builtin:pocketsphinx
    # (pocketsphinx-testdata: 5 cards, 5 LibriVox sentences, 1 digit string), a table of audio paths and transcripts, or null
    real_speech: str | None = sources.POCKETSPHINX


class SpeechRecognition(Task):
    name = "speech-recognition"
    family = "finetune.tasks.speech-recognition"  # its own family: the verbs are this folder's modules
    # the ensemble keys of a generative task (a finetune member, seed 1): the member stage then says why it does not apply
    sections = {"data": SpeechData, "preprocess": SpeechPreprocess, "train": SpeechTrain, "evaluate": SpeechEvaluate,
                "ensemble": ensemble_section("speech-recognition")}
    val_metrics = ("loss",)  # teacher-forced loss of the val transcripts: the Trainer selects on it
    has_labels = False  # a transcript is no class
    models = SpeechModels()

    # -- data
    def read(self, data: SpeechData) -> Source:
        return sources.read(data)

    def read_unlabelled(self, path, data: SpeechData) -> Source:
        return sources.unlabelled(path, data)

    def check_inputs(self, inputs: pd.Series, data: SpeechData) -> tuple[pd.Series, pd.Series]:
        return check_clips(inputs, data)

    def normalize(self, inputs: pd.Series, preprocess: SpeechPreprocess) -> tuple[pd.Series, pd.Series]:
        window = preprocess.window_seconds
        problems = [f"clip is {s:.2f} s long, longer than preprocess.window_seconds {window}" if s > window else "" for s in inputs.map(seconds)]
        return inputs, pd.Series(problems, index=inputs.index, dtype=object)

    def duplicate_key(self, inputs: pd.Series) -> pd.Series:
        return inputs.map(lambda content: hashlib.sha256(stored_samples(content).tobytes()).hexdigest())

    def featurize(self, parts: dict[str, pd.DataFrame], params, trained: dict | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
        from .preprocess import featurize

        return featurize(self, parts, params, trained)

    def features_for(self, params, prepared: dict[str, pd.DataFrame], label_map: dict) -> tuple[dict[str, pd.DataFrame], dict]:
        """The prepared rows themselves: a trial's model reads the same clips and must share the tokenizer (checked)."""
        from .preprocess import check_tokenizer

        check_tokenizer(self, params, label_map)
        return prepared, label_map

    # -- verbs that do not apply
    def member(self, params, name, model_folder, reports_folder) -> dict:
        raise Unsupported("ensembles of speech recognisers are not built: transcripts of several models cannot be averaged like "
                          "class probabilities (ROVER-style word voting is not implemented)")

    def ensemble(self, params, folder, model_folder) -> dict:
        raise Unsupported("ensembles of speech recognisers are not built (see the member stage)")

    def explain(self, params, folder) -> dict:
        raise Unsupported("explanations of transcripts (which sounds made which words) are not built for speech recognition yet")

    # -- report
    def display(self, frame: pd.DataFrame) -> pd.Series:
        return frame[ORIGIN] if ORIGIN in frame else frame["id"].map(lambda i: f"row id {i}")

    def render(self, value) -> str:
        return player(value)


TASK = SpeechRecognition()
