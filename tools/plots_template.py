"""Write the HTML template that makes `dvc plots show` render offline.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so offline it shows nothing.
This template inlines the same libraries (bundled by the vl-convert-python wheel) and leaves out
DVC's `{scripts}` placeholder, where the CDN tags would go. .dvc/config points `plots.html_template`
at the file; `make setup` writes it (it is ~1 MB, generated, so not committed).
"""
from pathlib import Path

import vl_convert

TARGET = Path(__file__).resolve().parents[1] / ".dvc" / "plots_template.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
{refresh_tag}
<meta charset="utf-8">
<title>DVC plots (offline)</title>
<script>
__BUNDLE__
</script>
<style>body{font-family:system-ui,sans-serif} table{border-spacing:15px}</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def main() -> None:
    # the bundle must not hold the literal placeholders DVC substitutes
    bundle = vl_convert.javascript_bundle(vl_version="5.21").replace("{plot_divs}", "").replace("{refresh_tag}", "")
    TARGET.write_text(PAGE.replace("__BUNDLE__", bundle), encoding="utf-8")
    print(f"wrote {TARGET} ({TARGET.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
