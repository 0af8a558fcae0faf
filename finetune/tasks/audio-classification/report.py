"""The audio task's part of the report: each explained clip playable, its log-mel spectrogram and every method's map
over it, and which mel bands each class's decisions rest on."""
from __future__ import annotations

import numpy as np
import pandas as pd

from finetune import paths
from finetune.data.audio import player
from finetune.reporting.html import esc, figure_img

METHODS = {"integrated_gradients": "integrated gradients", "occlusion": "occlusion"}


def _figure(width: float = 2.6, height: float = 1.3):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    return figure, figure.add_axes((0, 0, 1, 1))


def spectrogram_png(spectrogram: list, scores: list | None, seconds: float, window: float) -> str:
    """The log-mel spectrogram (low bands at the bottom, the clip's end marked); with scores, the map over it in red (for
    the predicted class) and blue (against), opacity by |score| relative to the map's 98th percentile."""
    figure, axes = _figure()
    extent = (0, window, 0, 1)
    axes.imshow(np.asarray(spectrogram), origin="lower", aspect="auto", cmap="gray" if scores is not None else "magma", extent=extent)
    if scores is not None:
        values = np.asarray(scores, dtype=np.float32)
        values = np.clip(values / (np.percentile(np.abs(values), 98) or np.abs(values).max() or 1.0), -1, 1)
        from matplotlib import colormaps

        colours = colormaps["RdBu_r"]((values + 1) / 2)
        colours[..., 3] = 0.85 * np.abs(values)
        axes.imshow(colours, origin="lower", aspect="auto", extent=extent, interpolation="bilinear")
    axes.axvline(seconds, color="white", linewidth=0.8, linestyle=":")
    axes.set_axis_off()
    return figure_img(figure, "log-mel spectrogram" + (" with attributions" if scores is not None else ""))


def band_profiles(global_view: dict) -> str:
    figure, axes = _figure(5, 2.2)
    for label, entry in global_view.items():
        axes.plot(entry["bands"], label=f"{label} ({entry['examples']})")
    axes.set_axis_on()
    axes.set_xlabel("mel band (low to high)")
    axes.set_ylabel("mean |IG|, scaled")
    axes.legend(fontsize=6, ncol=2)
    return figure_img(figure, "mean |IG| per mel band for each predicted class")


def spectrogram_explanations(result: dict, saved: dict, params) -> str:
    methods = [m for m in METHODS if m in result["methods"]]
    f = result["faithfulness"]
    clips = pd.read_parquet(paths.PREPARED / "test.parquet", columns=["id", "input"]).set_index("id")["input"]
    window = float(params.preprocess.window_seconds)
    scores = ", ".join(f"{f['aopc_top_ig'] if m == 'integrated_gradients' else f[f'aopc_top_{m}']:.4f} ranked by {METHODS[m]}" for m in methods)
    worse = [METHODS[m] for m in methods if f["beats_random"][m]["faithful"] is not True]
    head = "<tr><th>example</th><th>clip</th><th>log-mel</th>" + "".join(f"<th>{esc(METHODS[m])}</th>" for m in methods) + "</tr>"
    rows = []
    for e in saved["examples"]:
        tone = "good" if e["actual"] == e["predicted"] else "bad"
        maps = "".join(f"<td>{spectrogram_png(e['spectrogram'], e['maps'][m], e['seconds'], window)}</td>" for m in methods)
        rows.append(f'<tr><td><b class="{tone}">{esc(e["predicted"])}</b><br>p = {e["probability"]:.3f}<br>true: {esc(e["actual"])}<br>'
                    f'<span class="muted">{esc(e["why_chosen"])}; IG delta {e["convergence_delta"]:+.4f}</span></td>'
                    f"<td>{player(clips[e['id']])}</td><td>{spectrogram_png(e['spectrogram'], None, e['seconds'], window)}</td>{maps}</tr>")
    return (
        f"<p>Deleting the top-k of the clip's regions ({esc(f['regions'])}; deleted = silent) lowers p(predicted) on average by {scores}, "
        f"vs {f['aopc_random']:.4f} for random regions. "
        + (f"<b>Not shown better than random: {esc(', '.join(worse))}.</b>" if worse else "Every method beats random.")
        + " Maps: contributions to the predicted class's probability over the log-mel spectrogram (time left to right, low "
        "frequencies at the bottom; the dotted line is the clip's end, padding after it): red for, blue against.</p>"
        f"<table>{head}{''.join(rows)}</table><h3>Which frequencies each predicted class rests on</h3>{band_profiles(saved['global'])}"
    )
