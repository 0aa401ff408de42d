"""`make plots`: every plot of the committed runs on a page that renders with no network, in a real headless Chromium.

DVC's own page loads Vega from a CDN, so on a machine without internet it stays blank; the control below shows that
(under the same blocked network), and the page `make plots` writes renders every plot as SVG with its marks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dvcrepo import ROOT, sh

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian package chromium; .ci/run installs it)"),
    pytest.mark.skipif(shutil.which("npm") is None, reason="no npm: make plots installs Vega from the npm registry"),
]
PLOT_DIV = re.compile(r'<div id\s*=\s*"([^"]+)"[^>]*>')


def _render(page: Path) -> str:
    """The page's DOM after its scripts ran, every host name unresolvable: as on a machine with no network."""
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=60000", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout


def _plots(page: Path) -> list[str]:
    """The ids of the plots DVC put on a page: each div that calls vegaEmbed."""
    html = page.read_text(encoding="utf-8")
    return [m[1] for m in PLOT_DIV.finditer(html) if f"vegaEmbed('#{m[1]}'" in html]


def _parts(dom: str, ids: list[str]) -> dict[str, str]:
    """Each plot's div in the rendered DOM, up to the next plot's."""
    starts = sorted((m.start(), m[1]) for m in PLOT_DIV.finditer(dom) if m[1] in ids)
    ends = [s for s, _ in starts[1:]] + [len(dom)]
    return {plot: dom[start:end] for (start, plot), end in zip(starts, ends, strict=True)}


def _drawn(dom: str, ids: list[str]) -> dict[str, int]:
    """Per plot, the data marks (lines, bars, cells) its SVG holds; 0 where nothing was drawn."""
    parts = _parts(dom, ids)
    return {plot: parts[plot].count("role-mark") if "<svg" in parts.get(plot, "") else 0 for plot in ids}


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plots") / "page"
    subprocess.run(["make", "-s", "plots", f"PLOTS_OUT={out}"], cwd=ROOT, check=True, capture_output=True, text=True)
    return out / "index.html"


def test_every_plot_renders_offline(page: Path) -> None:
    ids = _plots(page)
    runs = [f"metrics_per_class_{run}_per_class_json" for run in ("baseline", "phase1", "phase2a", "phase2b")]
    sweep = [i for i in ids if i.startswith("metrics_confusion_gamma_sweep_")]
    assert set(runs) <= set(ids) and len(sweep) >= 3, ids  # every phase, and the sweep's γ from the folders
    assert any(i.startswith("metrics_train_phase1_") for i in ids)
    dom = _render(page)
    errors = re.search(r'<pre id="plot-errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert errors is not None and errors[1].strip() == "", errors
    blank = [plot for plot, marks in _drawn(dom, ids).items() if marks == 0]
    assert blank == [], f"{len(blank)} of {len(ids)} plots drew nothing: {blank[:5]}"


def test_dvc_s_own_page_is_blank_without_a_network(page: Path, tmp_path: Path) -> None:
    sh(ROOT, "dvc", "plots", "show", "-o", str(tmp_path / "cdn"))
    cdn_page = tmp_path / "cdn" / "index.html"
    assert "cdn.jsdelivr.net" in cdn_page.read_text(encoding="utf-8")
    ids = _plots(cdn_page)
    assert len(ids) == len(_plots(page))  # the same plots ...
    parts = _parts(_render(cdn_page), ids)
    assert len(parts) == len(ids) and not any("<svg" in p or "<canvas" in p for p in parts.values())  # none drawn
