"""report.html and the gallery opened in headless Chromium (Debian's `chromium`, installed by `make
system-deps`): every image loaded, the runs table has one row per finished child run, the results table one
row per (feature set, model)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from captionrec.config import load_config
from captionrec.report import build, gallery
from report_fixtures import caption_rows, shared_grid

CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const out = {images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
               runs: document.querySelectorAll('#runs tbody tr.run').length,
               results: document.querySelectorAll('#results tbody tr').length,
               items: document.querySelectorAll('div.item').length,
               links: Array.from(document.links).map(a => a.getAttribute('href'))};
  document.body.setAttribute('data-check', JSON.stringify(out));
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is not installed: run `make system-deps` (it installs Debian's chromium package)")


def open_in_chromium(page: Path, tmp: Path) -> dict:
    """Load a copy of `page` (with a check script appended) headless; the DOM after load says what loaded."""
    probe = tmp / f"probe-{page.name}"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--allow-file-access-from-files",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        probe.as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'data-check="([^"]*)"', out.stdout)
    assert m, f"no check result in the DOM (rc {out.returncode}): {out.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def report_files(tmp_path_factory, sample_dir):
    grid = shared_grid(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("browser")
    cfg = load_config(
        "local",
        [
            f"tracking.tracking_uri={grid.tracking_uri}",
            "tracking.experiment=report-tests",
            "report.bootstrap_samples=200",
            "report.gallery.items=3",
        ],
    )
    runset = build.load(cfg.tracking, cfg.report)
    items, caps = caption_rows(sample_dir, ["2", "11", "30"])
    # plus a win / loss group (captionrec.analysis.core.gallery_picks) of two of the items, annotated
    picked = replace(cfg.report.gallery, item_ids=("2", "30"))
    notes = {i: {"win / loss": f"mllm_video vs videomae: 2 case(s) won of item {i}"} for i in ("2", "30")}
    group = (
        "mllm_video vs videomae: items the caption feature wins most",
        gallery.gallery_entries(items, caps, picked, extra=notes),
    )
    page = gallery.render_gallery(gallery.gallery_entries(items, caps, cfg.report.gallery), groups=[group])
    files = build.write_report(build.context(runset, cfg.report), tmp / "out", gallery_html=page)
    return grid, runset, files, tmp


def test_report_html_in_chromium(report_files):
    grid, runset, files, tmp = report_files
    check = open_in_chromium(files.html, tmp)
    print(check)
    assert check["images"] >= 5 and check["loaded"] == check["images"]
    assert check["runs"] == len(grid.finished) == len(runset.finished)
    assert check["results"] == len({(f, m) for f, m, _ in grid.finished})
    assert build.GALLERY_FILE in check["links"]


def test_gallery_in_chromium(report_files):
    _, _, files, tmp = report_files
    check = open_in_chromium(files.gallery, tmp)
    print(check)
    assert check["items"] == 3 + 2 and check["images"] == 5 * 6 and check["loaded"] == check["images"]
    page = files.gallery.read_text()
    assert page.index("items the caption feature wins most") < page.index('id="group-0-item-30"')
    assert "2 case(s) won of item 30" in page
