"""report for speech recognition: the sections of the report (the report stage writes the page).

Sections: the headline (WER and CER of the fine-tuned model, greedy and beam, beside the pretrained model on the same
test clips, with intervals and the paired verdict), real human recordings before and after, the test clips the
fine-tuned model got most wrong (each playable, with both transcripts), int8 vs fp32, training curves, data. Each
section appears when its stage's outputs exist.
"""
from __future__ import annotations

import pandas as pd

from finetune import paths
from finetune.data.audio import padded_clips, player, wav_bytes
from finetune.families.generative.report import training_section
from finetune.io import read_json
from finetune.reporting.html import esc, table


def _rate(scores: dict, name: str) -> str:
    ci = scores["ci95"][name]
    return f"{scores[name]:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def _verdict(comparison: dict) -> str:
    c = comparison["wer"]
    return f"{c['verdict']} (WER {c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}], p = {c['p']:.2g})"


def headline(params) -> str | None:
    if not paths.METRICS.is_file():
        return None
    m = read_json(paths.METRICS)
    rows = [("fine-tuned, greedy", m, m["clips_per_second"]["fine_tuned"]),
            (f"fine-tuned, beam search ({m['beam']['beams']} beams)", m["beam"], m["clips_per_second"]["fine_tuned_beam"]),
            (m["baseline"]["model"], m["baseline"], m["clips_per_second"]["pretrained"])]
    frame = pd.DataFrame([{"model": name, "WER": _rate(s, "wer"), "CER": _rate(s, "cer"), "clips/s": speed} for name, s, speed in rows])
    return (f"<p>Test: {m['clips']} clips, {m['words']} words, unheard voices. Fine-tuned vs pretrained: <b>{esc(_verdict(m['vs_pretrained']))}</b>; "
            f"{100 * m['relative_wer_reduction']:.0f} % fewer word errors. Beam vs greedy: {esc(_verdict(m['beam']['vs_greedy']))}. "
            "Rates after Whisper's English normaliser; 95 % bootstrap intervals over clips.</p>" + table(frame))


def real_speech_section(params) -> str | None:
    real = read_json(paths.METRICS).get("real_speech") if paths.METRICS.is_file() else None
    if not real:
        return None
    groups = {"all": real, **real["groups"]}
    frame = pd.DataFrame([{"recordings": name, "clips": g["fine_tuned"]["clips"], "words": g["fine_tuned"]["words"],
                           "pretrained WER": _rate(g["pretrained"], "wer"), "fine-tuned WER": _rate(g["fine_tuned"], "wer"),
                           "fine-tuned vs pretrained": _verdict(g["vs_pretrained"])} for name, g in groups.items()])
    rows = pd.read_csv(paths.EVALUATION / "real_speech.csv")[["origin", "transcript", "pretrained", "fine_tuned"]]
    return (f"<p>Real people ({esc(real['source'])}), never trained on: the fine-tune should not be worse here than the pretrained "
            "model beyond the interval (it would have forgotten general speech).</p>" + table(frame) + table(rows))


def worst_clips(params) -> str | None:
    path = paths.EVALUATION / "transcripts.csv"
    if not path.is_file():
        return None
    transcripts = pd.read_csv(path).sort_values(["fine_tuned_word_errors", "id"], ascending=[False, True]).head(params.report.worst_errors)
    wrong = int((pd.read_csv(path)["fine_tuned_word_errors"] > 0).sum())
    test = pd.read_parquet(paths.PREPARED / "test.parquet").set_index("id")
    clips = padded_clips(test.loc[transcripts["id"], "samples"], 30)
    shown = transcripts.assign(clip=[player(wav_bytes(c[:int(s * 16_000) + 1])) for c, s in zip(clips, transcripts["seconds"])])
    return (f"<p>{wrong} test clips with a word error (greedy); the {len(shown)} shown are the worst, each playable.</p>"
            + table(shown[["clip", "origin", "reference", "pretrained", "fine_tuned", "fine_tuned_word_errors"]], html_columns=("clip",)))


def compress_section(params) -> str | None:
    if not paths.COMPRESS_METRICS.is_file():
        return None
    result = read_json(paths.COMPRESS_METRICS)
    if not result.get("models"):
        return f"<p>{esc(result.get('skipped'))}</p>"
    frame = pd.DataFrame([{"model": name, "WER": _rate(row, "wer"), "size (MB)": row["size_mb"],
                           **{key.replace("_", " "): value for key, value in row.items() if key.startswith(("clips_per_second", "speedup"))}}
                          for name, row in result["models"].items()])
    return f"<p>int8 vs fp32 on the test clips: {esc(_verdict(result['models']['int8']['vs_teacher']))}.</p>" + table(frame)


def data_section(params) -> str:
    prep = read_json(paths.PREPROCESS_SUMMARY)
    rows = pd.DataFrame([{"split": name, **facts} for name, facts in prep["splits"].items()])
    return (f"<p>Window {prep['window_seconds']} s. Dropped clips: {esc(prep['dropped'] or 'none')}. Test words never heard in "
            f"training: {esc(prep['test_words_unseen_in_train'] or 'none')}.</p>" + table(rows))


SECTIONS = [("Summary", headline), ("Real speech", real_speech_section), ("Test clips, most word errors first", worst_clips),
            ("Compression", compress_section), ("Training", training_section), ("Data", data_section)]


def run(task, params) -> list[tuple[str, str]]:
    return [(title, html) for title, build in SECTIONS if (html := build(params)) is not None]
