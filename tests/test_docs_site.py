"""The docs site as a reader meets it: built with mkdocs --strict, opened in Chromium with the network cut off."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_api_reference_renders_examples_as_code_and_headings_only_for_objects(site):
    page = (site / "api" / "index.html").read_text(encoding="utf-8")
    # Docstring examples (>>>) are code blocks, never blockquotes whose lines turn into headings.
    assert "<blockquote" not in page
    assert (
        '<pre><span></span><code><span class="gp">&gt;&gt;&gt; </span>' in page
    )  # a highlighted console block

    ids = re.findall(r'<h[1-6][^>]*\bid="([^"]+)"', page)
    assert ids[0] == "api-reference"
    assert all(i.startswith("invoice_vlm.") for i in ids[1:]), [
        i for i in ids[1:] if not i.startswith("invoice_vlm.")
    ]
    assert "invoice_vlm.InvoiceExtractor" in ids  # a heading above its parameter table
    assert ids.index("invoice_vlm.InvoiceExtractor") < ids.index(
        "invoice_vlm.InvoiceExtractor.from_pretrained"
    )


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_every_page_loads_with_no_request_outside_the_site(site):
    playwright = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("needs the system's Chromium (.ci/run installs it)")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    pages = sorted(p.relative_to(site).parent.as_posix() for p in site.rglob("index.html"))
    outside: list[str] = []
    inside = 0

    def route(r):
        nonlocal inside
        host = urlsplit(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            inside += 1
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=_chromium(),
                args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
            )
            page = browser.new_page()
            page.route("**/*", route)
            for name in pages:
                page.goto(f"{base}/{'' if name == '.' else name + '/'}", wait_until="networkidle")
            browser.close()
    finally:
        server.shutdown()
    assert len(pages) >= 10 and inside > len(pages)  # every page and its own assets came from the site
    assert outside == [], f"the docs site asked outside itself: {sorted(set(outside))}"


PAGE_EXTRAS = {
    "serve.md": {"serve", "data"},  # the service, and data.load for the review folder
    "finetune.md": {"train"},  # train brings data and paligemma
    "evaluation.md": {"data", "metrics"},
    "data.md": {"data"},
    "ocr.md": {"ocr"},
    "constrained.md": {"paligemma", "constrained"},
    "scale.md": {"vllm", "ray"},
}


def test_install_lines_are_written_one_way_and_name_each_pages_extras():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    pattern = re.compile(r"pip install (-e )?'\.\[([a-z,]+)\]'")
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        # The package-index form appears only where a page says when it applies (the quickstart's EXTRA note).
        assert not re.search(r"pip install '?invoice-vlm\[(?!EXTRA)", text), page.name
        named = {extra for m in pattern.finditer(text) for extra in m.group(2).split(",")}
        assert named <= extras, (page.name, named - extras)
        assert PAGE_EXTRAS.get(page.name, set()) <= named, (page.name, PAGE_EXTRAS[page.name] - named)
