"""The audio task (finetune/tasks/audio-classification/): clips checked and quarantined with their reason, the window, seeded augmentation, tones told apart by a tiny Whisper through the real
stages, the MFCC member, predictions on a folder, the builtin digits synthesised."""
import importlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

from finetune import inference, paths
from finetune.tasks import get_task
from stages import evaluate, explain, ingest, member, preprocess, report, train
from tests.support.data import TONES, tone, write_tone_folder
from tests.support.params import load, tiny_audio_params
from tests.support.predicting import b64, served

TASK = get_task("audio-classification")
SOURCES = importlib.import_module("finetune.tasks.audio-classification.sources")
MODELS = importlib.import_module("finetune.tasks.audio-classification.models")


# -- clips ----------------------------------------------------------------------------------------------
def _wav(samples, rate=16_000, **options) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=options.pop("format", "WAV"), **options)
    return buffer.getvalue()


def test_ingest_keeps_good_clips_at_16_khz_and_quarantines_each_bad_one_with_its_reason(workdir, tiny_whisper):
    root = write_tone_folder(workdir / "data/raw/tones", 3)
    bad = {"notes.txt": b"not audio", "broken.wav": b"RIFF\x00\x00garbage", "silent.wav": _wav(np.zeros(8000, np.float32)),
           "clipped.wav": _wav(np.sign(tone("low", 0.5)).astype(np.float32)), "long.wav": _wav(tone("low", 3.0)),
           "phone.wav": _wav(tone("low", 0.5, 4000), 4000)}
    for name, content in bad.items():
        (root / "low" / name).write_bytes(content)
    ingest.run(load(tiny_audio_params(tiny_whisper, data={"max_seconds": 2.0, "on_bad_rows": "skip"})))
    rows = pd.read_parquet(paths.INGESTED)
    assert sorted(rows["label"].value_counts().to_dict().items()) == [("high", 3), ("low", 3), ("mid", 3)]
    for content in rows["input"]:  # every kept clip stored as 16 kHz mono 16-bit WAV, the FLACs at 22.05 kHz resampled
        info = soundfile.info(io.BytesIO(content))
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
    quarantine = pd.read_csv(paths.QUARANTINE / "ingest.csv")
    reasons = dict(zip(quarantine["content"].str.rsplit("/", n=1).str[-1], quarantine["problem"]))
    assert reasons["notes.txt"] == "not an audio file (.txt)"
    assert reasons["broken.wav"] == "not a readable audio file (WAV, FLAC, OGG or MP3): Format not recognised."
    assert reasons["silent.wav"] == "silent: every sample is zero"
    assert reasons["clipped.wav"].startswith("clipped: 100.0% of its samples are at full scale")
    assert reasons["long.wav"] == "clip is 3.0 s long; data.max_seconds is 2 (cut long recordings into clips)"
    assert reasons["phone.wav"].startswith("sample rate 4,000 Hz is below data.min_sample_rate 8,000 Hz")
    assert len(reasons) == len(bad)


def test_a_clip_longer_than_the_window_is_dropped_with_the_reason(workdir, tiny_whisper):
    root = write_tone_folder(workdir / "data/raw/tones", 4)
    soundfile.write(root / "mid" / "long.wav", tone("mid", 1.5), 16_000)
    params = load(tiny_audio_params(tiny_whisper))
    ingest.run(params)
    preprocess.run(params)
    dropped = pd.read_csv(paths.QUARANTINE / "preprocess.csv")
    assert dropped["problem"].tolist() == ["clip is 1.50 s long, longer than preprocess.window_seconds 1"]


# -- features and augmentation --------------------------------------------------------------------------
def _dataset(augment: bool, n: int = 4):
    clips = [np.round(tone(label, 0.4, seed=i) * 32767).astype(np.int16).tobytes() for i, label in enumerate(list(TONES)[:1] * n)]
    frame = pd.DataFrame({"samples": clips, "label": [0] * n})
    preprocess_section = TASK.sections["preprocess"]() if augment else None
    extractor = MODELS.extractor_for(1)
    return TASK.models.dataset(frame, {"audio": {"window_seconds": 1}}, extractor, preprocess_section)


def test_features_are_whisper_log_mels_of_the_window_and_augmentation_is_seeded_per_epoch_and_row():
    plain, augmented = _dataset(False), _dataset(True)
    assert plain[0]["input_features"].shape == (80, 100)  # 1 s: 100 frames of 10 ms, 50 encoder positions
    assert torch.equal(plain[0]["input_features"], plain[0]["input_features"])
    first = augmented.features(1, epoch=0)
    assert np.array_equal(first, augmented.features(1, epoch=0))  # a rerun (or a resumed run) sees the same clip
    assert not np.array_equal(first, augmented.features(1, epoch=1))  # every epoch a new draw
    assert not np.array_equal(first, plain.features(1, epoch=0))
    assert not np.array_equal(augmented.features(1, 0), augmented.features(2, 0)[:, :])
    rng = np.random.default_rng(0)
    shifted = [np.flatnonzero(np.abs(augmented.waveform(0, rng)) > 0.05)[0] for _ in range(20)]
    assert len(set(shifted)) > 10 and max(shifted) > 4000  # the clip starts anywhere the 1 s window leaves room for


def test_the_window_cuts_the_position_table_and_the_saved_extractor_reads_the_same_window(tiny_whisper, workdir):
    write_tone_folder(workdir / "data/raw/tones", 1)
    params = load(tiny_audio_params(tiny_whisper))
    model = TASK.models.load_model(str(tiny_whisper), {"labels": ["a", "b"], "audio": {"window_seconds": 1}}, params.train)
    assert model.encoder.embed_positions.weight.shape[0] == 50 and model.config.max_source_positions == 50
    from transformers import WhisperForConditionalGeneration

    full = WhisperForConditionalGeneration.from_pretrained(tiny_whisper).model.encoder.embed_positions.weight
    assert torch.equal(model.encoder.embed_positions.weight, full[:50])  # Whisper's own first second of positions
    TASK.models.save_trained(model, TASK.models.load_processor(str(tiny_whisper), False), workdir / "saved")
    from transformers import pipeline

    classify = pipeline("audio-classification", model=str(workdir / "saved"))  # what `finetune export` promises
    assert {row["label"] for row in classify(tone("low", 0.5), top_k=2)} == {"a", "b"}
    too_long = load(tiny_audio_params(tiny_whisper, preprocess={"window_seconds": 3}))
    with pytest.raises(Exception, match="preprocess.window_seconds 3 is longer than .* reads \\(2 s\\)"):
        TASK.models.load_model(str(tiny_whisper), {"labels": ["a", "b"], "audio": {"window_seconds": 3}}, too_long.train)


# -- through the stages ---------------------------------------------------------------------------------
def test_a_tiny_whisper_and_the_mfcc_member_tell_tones_apart_are_explained_and_predict_a_folder(workdir, tiny_whisper, tmp_path):
    write_tone_folder(workdir / "data/raw/tones", 16)
    params = load(tiny_audio_params(tiny_whisper))
    for stage in (ingest, preprocess, train, evaluate):
        stage.run(params)
    metrics = json.loads(Path("reports/metrics.json").read_text())
    predictions = pd.read_csv("reports/evaluate/predictions.csv")
    assert metrics["accuracy"] == pytest.approx((predictions["actual"] == predictions["predicted"]).mean())
    assert metrics["accuracy"] >= 0.8 > metrics["baseline"]["accuracy"] + 0.3  # three pitches: the tiny encoder learns them
    member.run(params, "mfcc")
    scored = json.loads(Path("reports/member_summaries/mfcc.json").read_text())
    assert scored["test"]["accuracy"] == 1.0 and scored["features"] == 80  # a pitch is in the cepstrum's statistics
    explain.run(params)
    explained = json.loads(Path("reports/explain.json").read_text())
    assert explained["examples"] == 6 and explained["methods"] == ["integrated_gradients", "occlusion"]
    assert explained["faithfulness"]["aopc_top_ig"] > explained["faithfulness"]["aopc_random"]  # a tone's band matters, silence not
    saved = json.loads(Path("reports/explain/attributions.json").read_text())
    assert set(saved["global"]) <= set(TONES) and len(next(iter(saved["global"].values()))["bands"]) == 80
    report.run(params)
    page = Path("reports/report.html").read_text()
    assert page.count('<audio controls preload="none" src="data:audio/wav;base64,') >= 6 and ">Explanations" in page
    new = tmp_path / "new"
    (new / "nested").mkdir(parents=True)
    soundfile.write(new / "nested" / "high.wav", tone("high", 0.6, seed=99), 16_000)
    soundfile.write(new / "low.flac", tone("low", 0.6, 22_050, seed=98), 22_050)
    (new / "readme.md").write_text("not audio")
    predicted = inference.load(paths.MODEL).predict(new, batch_size=4)
    assert dict(zip(predicted.table["input"].map(lambda p: Path(p).name), predicted.table["label"])) == {"high.wav": "high", "low.flac": "low"}
    assert [(Path(b.content).name, b.problem) for b in predicted.bad] == [("readme.md", "not an audio file (.md)")]
    answer = served(inference.load(paths.MODEL), [{"audio": b64(new / "low.flac")}])
    assert [row["label"] for row in answer["predictions"]] == ["low"]  # `finetune serve`: the clip's bytes in the request


# -- the builtin sets ---------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian's espeak-ng (make setup installs it where apt can)")
def test_the_builtin_digits_are_real_synthesised_speech_the_pretrained_whisper_mostly_hears(monkeypatch, workdir):
    monkeypatch.setattr(SOURCES, "SPEAKERS", ("m1", "f2", "klatt"))
    monkeypatch.setattr(SOURCES, "PIPER_TAKES", 1)
    source = SOURCES.read(TASK.sections["data"]())
    frame = source.frame
    assert len(frame) == 3 * 10 * SOURCES.TAKES + 10 and set(frame["label"]) == set(SOURCES.DIGITS)
    assert frame.groupby("split")["origin"].apply(lambda o: set(o.str.split(" ").str[1])).map(len).sum() == 4  # no speaker in two splits
    neural = frame["origin"].str.startswith("spoken-digits: piper joe")
    assert neural.sum() == 10 and (frame.loc[neural, "split"] == "test").all()  # piper's neural voice: test only
    again = SOURCES.read(TASK.sections["data"]()).frame
    assert again["input"].tolist() == frame["input"].tolist()  # deterministic: DVC's cache stays valid
    lengths = [soundfile.info(io.BytesIO(c)).duration for c in frame["input"]]
    assert 0.2 < min(lengths) and max(lengths) < 2.0  # every word fits the default 2 s window


def test_whispers_feed_forward_neurons_are_pruned_and_the_smaller_model_reloads(tiny_whisper, workdir):
    from transformers import WhisperForAudioClassification

    from finetune.compression import prune

    write_tone_folder(workdir / "data/raw/tones", 1)
    model = TASK.models.load_model(str(tiny_whisper), {"labels": ["a", "b"], "audio": {"window_seconds": 1}}, load(tiny_audio_params(tiny_whisper)).train)
    teacher = TASK.models.load_model(str(tiny_whisper), {"labels": ["a", "b"], "audio": {"window_seconds": 1}}, load(tiny_audio_params(tiny_whisper)).train)
    prune.ffn_neurons(model, 0.5)
    assert model.config.encoder_ffn_dim == 16 and model.encoder.layers[0].fc1.out_features == 16  # Whisper names it encoder_ffn_dim
    assert prune.sparsity(teacher, model)["ffn_neurons_removed"] == 0.5
    model.save_pretrained(workdir / "pruned")
    features = torch.randn(2, 80, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        again = WhisperForAudioClassification.from_pretrained(workdir / "pruned").eval()
        assert torch.allclose(again(input_features=features).logits, model.eval()(input_features=features).logits, atol=1e-6)
