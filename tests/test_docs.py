"""The docs: the site builds with --strict (a broken link, a missing page or a page left out of nav fails), its pages load
nothing from the network, the README stays a short first page whose links resolve, and the architecture pictures show
the graphs the code has now."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

from tests.support.repos import PROJECT

REMOTE_RESOURCE = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=\"(?:https?:)?//[^\"]+\"", re.IGNORECASE)


def test_the_site_builds_strictly_and_its_pages_load_nothing_from_the_network(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=PROJECT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 40  # every docs page and every results page
    for page in pages:
        assert not REMOTE_RESOURCE.findall(page.read_text(encoding="utf-8")), page
    assert (site / "results" / "text" / "reports" / "report.html").is_file()  # each committed run's HTML report ships with the site


def test_a_remote_script_or_font_would_be_caught():
    assert REMOTE_RESOURCE.findall('<script src="https://unpkg.com/iframe-worker/shim"></script>')
    assert REMOTE_RESOURCE.findall('<link rel="stylesheet" href="//fonts.googleapis.com/css?family=Roboto">')
    assert not REMOTE_RESOURCE.findall('<a href="https://squidfunk.github.io/mkdocs-material/">Material</a>')  # a link, not a load


def test_the_readme_is_a_short_first_page_whose_links_all_resolve():
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert len(targets) > 15
    for target in targets:
        assert "://" in target or (PROJECT / target).exists(), target


def test_the_architecture_pictures_show_the_graphs_the_code_has_now():
    spec = importlib.util.spec_from_file_location("docs_pictures", PROJECT / "tools" / "docs_pictures.py")
    pictures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pictures)
    for relative, (edges, _) in pictures.GRAPHS.items():
        committed = (PROJECT / relative).read_text(encoding="utf-8").splitlines()[1]
        assert committed == pictures.drawn_from(pictures.reduced(edges(PROJECT))), f"{relative} is stale: make docs"
