import re

from stages import evaluate, report
from tests.support import load, tiny_params


def test_report_is_one_self_contained_page_with_every_section(trained_workdir, tiny_model):
    params = load(tiny_params(tiny_model))
    evaluate.run(params)
    document = report.run(params)

    assert open("reports/report.html", encoding="utf-8").read() == document
    for title in ("Summary", "Test metrics", "Training", "Data", "Worst errors", "Params"):
        assert f">{title}" in document
    # nothing is fetched: no external URL in any src/href, no script or stylesheet link
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", document)
    assert "<script" not in document and "<link" not in document
    assert document.count('src="data:image/png;base64,') == 2  # confusion matrix + training curves
    assert "Tiny report" in document and "majority class" in document
    # texts are escaped, never injected as HTML
    assert "<td><b>" not in document
