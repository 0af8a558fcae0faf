"""The image task's part of the report: its explanations as maps over each example, the mean map per class, and
(report_sections) examples per class and a preview of the training augmentation."""
from __future__ import annotations

import base64
import html
import io
import json

import pandas as pd

from finetune import paths
from finetune.data.heads import IGNORE, Heads
from finetune.data.images import ImageDataset, normalized_image, pixel_array, thumbnail, thumbnail_array
from finetune.models.images import ImageProcessor
from finetune.reporting.html import esc, png_bytes_img, table


def heatmap_png(image: str, scores: list | None, size: int = 112) -> bytes:
    """PNG bytes of `image` (base64 PNG) at size x size; with scores (a map of any size), the image in grey under
    them: red for the predicted class, blue against, opacity by |score| relative to the map's 98th percentile
    (a zero shows the bare image)."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    picture = Image.open(io.BytesIO(base64.b64decode(image)))
    picture = (picture.convert("L") if scores is not None else picture).convert("RGB").resize((size, size), Image.Resampling.NEAREST)
    if scores is not None:
        values = np.asarray(scores, dtype=np.float32)
        scale = np.percentile(np.abs(values), 98) or np.abs(values).max() or 1.0  # a few extreme pixels would wash out the rest
        values = np.clip(np.asarray(Image.fromarray((values / scale).astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR)), -1, 1)
        alpha = 0.85 * np.abs(values)[..., None]
        blended = (1 - alpha) * np.asarray(picture) / 255 + alpha * colormaps["RdBu_r"]((values + 1) / 2)[..., :3]
        picture = Image.fromarray((blended * 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def class_map_png(scores: list, size: int = 96) -> bytes:
    """PNG bytes of a non-negative map (magma: black 0 to yellow at its maximum)."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    values = np.asarray(scores, dtype=np.float32)
    colours = colormaps["magma"](values / (values.max() or 1.0))[..., :3]
    buffer = io.BytesIO()
    Image.fromarray((colours * 255).round().astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()


PIXEL_METHODS = {"integrated_gradients": "integrated gradients", "gradient_x_input": "gradient × input", "occlusion": "occlusion",
                 "grad_cam": "Grad-CAM", "attention": "attention rollout"}


def pixel_explanations(result: dict, saved: dict, params) -> str:
    """The report's view of the "pixels" explainer (after the generic faithfulness table and skipped methods):
    how faithful each method's ranking of patches is, each example with every method's map laid over it,
    the mean |IG| map per predicted class, and the compressed models' drift."""
    f, methods = result["faithfulness"], [m for m in PIXEL_METHODS if m in result["methods"]]
    aopc = {m: f["aopc_top_ig"] if m == "integrated_gradients" else f[f"aopc_top_{m}"] for m in methods}
    verdicts = f["beats_random"]

    def shown(m: str) -> str:
        ci = verdicts[m]["ci95"]
        return f"{aopc[m]:.4f} ranked by {PIXEL_METHODS[m]}" + (f" (margin over random {ci['low']:+.4f} to {ci['high']:+.4f})" if ci else "")
    worse = [PIXEL_METHODS[m] for m in methods if verdicts[m]["faithful"] is not True]
    faithful = (f"<p>Deleting the top-k of {f['patches']} patches (replaced by the {esc(result['baseline'])} baseline) lowers p(predicted) "
                f"on average over k = 1..{f['k'][-1]} by " + ", ".join(shown(m) for m in methods)
                + f", vs {f['aopc_random']:.4f} for random patches (95 % intervals over the {result['examples']} examples). "
                + (f"<b>Not shown better than random: {esc(', '.join(worse))}</b> (those maps are not evidence of what the model relies "
                   "on here).</p>" if worse else "Every method beats random.</p>"))
    head = "<tr><th>example</th><th>image</th>" + "".join(f"<th>{esc(PIXEL_METHODS[m])}</th>" for m in methods) + "</tr>"
    rows = []
    for e in saved["examples"]:
        tone, number = ("good" if e["actual"] == e["predicted"] else "bad"), e["id"]
        cells = "".join(f"<td>{png_bytes_img(heatmap_png(e['image'], e['maps'][m]), f'{PIXEL_METHODS[m]}, example {number}')}</td>" for m in methods)
        rows.append(f'<tr><td><b class="{tone}">{esc(e["predicted"])}</b><br>p = {e["probability"]:.3f}<br>true: {esc(e["actual"])}<br>'
                    f'<span class="muted">{esc(e["why_chosen"])}; IG delta {e["convergence_delta"]:+.4f}</span></td>'
                    f"<td>{png_bytes_img(heatmap_png(e['image'], None), f'example {number}')}</td>{cells}</tr>")
    classes = "".join(f"<td>{png_bytes_img(class_map_png(v['map']), f'mean |IG| for {label}')}<br>{esc(label)} ({v['examples']})</td>"
                      for label, v in saved["global"].items())
    drift = result["compressed_vs_teacher"]
    drift_rows = [{"model": m, "mean Spearman ρ of IG patch scores vs the teacher": v["mean_spearman"] if isinstance(v, dict) else v}
                  for m, v in drift.items() if m != "teacher"]
    drift_html = (f"<h3>Do the compressed models look at the same patches as their teacher ({esc(drift['teacher'])})?</h3>"
                  f"{table(pd.DataFrame(drift_rows))}" if "teacher" in drift else "")
    return (
        f"{faithful}<p>Maps are contributions to the probability of the <i>predicted</i> class over the image in grey: red for, blue "
        f"against, each map scaled to its own 98th percentile of |value|. Integrated Gradients: {result['ig_steps']} steps from the "
        f"{esc(result['baseline'])} baseline, mean |convergence delta| {result['convergence_delta']['mean_abs']:.4f}. Grad-CAM and "
        "attention rollout only show where the model looks (never against); attention weights are not explanations.</p>"
        f"<table>{head}{''.join(rows)}</table><h3>Mean |IG| map per predicted class (examples)</h3><table><tr>{classes}</tr></table>{drift_html}"
    )


def examples_and_augmentation(models, params) -> list[tuple[str, str]]:
    """The report's sections of an image task: train examples per class, and the augmentation as the model sees it."""
    train = pd.read_parquet(paths.PREPARED / "train.parquet")
    layout = json.loads(paths.LABEL_MAP.read_text())
    labels, heads = layout["labels"], Heads.of(layout)
    if heads.multi:  # several heads: examples of the first class head's classes
        index, head = next((i, head) for i, head in enumerate(heads.classes) if head not in heads.targets)
        first = heads.matrix(train["label"])[:, index].astype(int)
        train, labels = train.assign(label=first)[first != IGNORE], heads.classes[head]
    per_class = "".join(f"<tr><td>{html.escape(label)}</td><td>{''.join(thumbnail(normalized_image(v), 64) for v in rows['input'].head(8))}</td></tr>"
                        for i, label in enumerate(labels) if not (rows := train[train["label"] == i]).empty)
    first = train.groupby("label", sort=True).head(1).head(6)
    dataset = ImageDataset(pixel_array(first, layout), first["label"].to_numpy(), ImageProcessor([0], [1]), params.preprocess.augment)
    preview = "".join(
        f"<tr><td>{html.escape(labels[int(label)])}</td><td>{thumbnail_array(dataset.pixels[i], 64)}</td>"
        f"<td>{''.join(thumbnail_array(dataset.augmented(i, epoch), 64) for epoch in range(6))}</td></tr>"
        for i, label in enumerate(first["label"]))
    augment = params.preprocess.augment
    mixing = ", ".join(f"{name} (alpha {alpha})" for name, alpha in (("MixUp", augment.mixup), ("CutMix", augment.cutmix)) if alpha)
    return [
        (f"Examples per {next(iter(heads.classes), 'class')} (train)", f"<table>{per_class}</table>"),
        ("Augmentation preview", "<p>Training images as the model sees them in six epochs (the seeded draws of "
         f"<code>{html.escape(str(augment.model_dump()))}</code>); validation and test images are never augmented."
         + (f" Batches are also mixed with {mixing}, not shown here." if mixing else "")
         + f"</p><table><tr><th>label</th><th>stored</th><th>augmented</th></tr>{preview}</table>"),
    ]
