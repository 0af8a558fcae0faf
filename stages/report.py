"""report: one self-contained HTML page (reports/report.html) built from the other stages' outputs, and reports/plots/:
every PNG the other stages drew, at the same path under it (what `dvc plots show` renders).

The task's family gives the sections (finetune/families/<family>/report.py: the headline scores, the ensemble,
compression, explanations, training, data, the worst errors...); a section appears when its stage's outputs exist. This
stage adds the params with their defaults filled in and writes the page (no script, every image embedded).
"""
from __future__ import annotations

import shutil

import yaml

from finetune import paths
from finetune.config.params import Params
from finetune.io import write_outputs
from finetune.reporting.html import esc, page
from finetune.stage import main
from finetune.tasks import get_task


def run(params: Params) -> str:
    sections = get_task(params.task).report(params)
    sections.append(("Params (with defaults filled in)", f"<pre>{esc(yaml.safe_dump(params.model_dump(), sort_keys=False))}</pre>"))
    document = page(params.report.title, sections)
    pictures = sorted(p for folder in (paths.EVALUATION, paths.ENSEMBLE, paths.COMPRESS, paths.EXPLAIN) for p in folder.rglob("*.png"))
    with write_outputs(paths.REPORT_HTML, paths.PLOTS) as (html, gallery):
        html.write_text(document, encoding="utf-8")
        gallery.mkdir()
        for picture in pictures:
            (gallery / picture.relative_to(paths.REPORTS)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(picture, gallery / picture.relative_to(paths.REPORTS))
    print(f"report: wrote {paths.REPORT_HTML} ({len(document) // 1024} KiB, {len(sections)} sections) and {len(pictures)} pictures to {paths.PLOTS}/")
    return document


if __name__ == "__main__":
    main(run, __doc__)
