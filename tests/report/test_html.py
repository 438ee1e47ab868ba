"""report.html: one self-contained page (no network, figures embedded as PNG), every run's text escaped, and it
renders in headless Chromium without console or load errors, with every plot decoded and not blank."""

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from slimkit.eval.evaluate import Measurement
from slimkit.eval.latency import Timing
from slimkit.method import StepReport
from slimkit.report.html import report_html
from slimkit.report.report import Report

CHROMIUM = shutil.which("chromium")


def search_section():
    trials = [{"point": p, "estimated_bytes": 60_000 - 5_000 * p, "size_bytes": 61_000 - 5_000 * p,
               "metric": 0.95 - 0.004 * p, "loss": 0.004 * p / 0.95, "seconds": 0.4, "meets_size": True,
               "meets_loss": p <= 4, "meets": p <= 4} for p in (2, 4, 6, 5)]
    groups = [{"name": n, "include": [n], "params": 1000} for n in ("fc1", "fc2", "fc3")]
    settings = ["bits=2", "bits=4", "sparsity=0.5"]
    return {"budget": {"target_bytes": None, "max_loss": 0.02, "max_trials": 4, "text": "metric loss ≤ 2.00%"},
            "original": {"metric": 0.95, "size_bytes": 200_000},
            "sensitivity": {"proxy": "divergence", "metric": "KL divergence", "cache_file": "", "evaluations": 10,
                            "settings": settings, "groups": groups,
                            "scores": {g["name"]: {s: 0.001 * (i + 1) * (j + 1) for j, s in enumerate(settings)}
                                       for i, g in enumerate(groups)}, "bytes": {}},
            "path": [{"bytes": 80_000 - 5_000 * p, "cost": 0.01 * p} for p in range(10)],
            "trials": trials, "chosen_point": 4, "choice": {"fc1": "bits=4", "fc2": "bits=2", "fc3": ""}}


def sample_report(model="lenet <script>alert(1)</script>"):
    before = Measurement("accuracy", 0.95, True, 50_610, 0.0, 203_000, {"batch1": Timing(0.30, 0.28, 0.4, 1)})
    after = Measurement("accuracy", 0.934, True, 50_610, 0.1, 41_000, {"batch1": Timing(0.32, 0.29, 0.5, 1)})
    steps = [StepReport("quant.rtn", {"method": "quant.rtn", "bits": 4}, 0.2, {"layers": 2, "note": "<i>x</i>"})]
    layers = [{"name": f"fc{i}", "params": 1000 * i, "bits_per_weight": 4.2 + i, "sparsity": 0.1 * i}
              for i in (1, 2, 3)]
    return Report(model, steps, before, after, "/tmp/out & co", ["a note with <tags>"], search=search_section(),
                  layers=layers)


def embedded_pngs(html):
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_the_page_is_self_contained_and_escapes_every_text(tmp_path):
    html = report_html(sample_report())
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html) and "<link" not in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;i&gt;x&lt;/i&gt;" in html
    assert "/tmp/out &amp; co" in html and "a note with &lt;tags&gt;" in html
    assert len(embedded_pngs(html)) == 3  # Pareto frontier, sensitivity heatmap, per-layer bars (no before/after file)
    assert 'class="chosen"' in html and "Budget search" in html and "5.0× smaller" in html


def test_a_report_without_search_or_layers_still_renders(tmp_path):
    report = sample_report("plain")
    report.search, report.layers = None, None
    html = report_html(report)
    assert "Budget search" not in html and "Per layer" not in html and "Before / after" in html


def test_every_embedded_plot_is_a_real_picture_not_a_blank():
    for png in embedded_pngs(report_html(sample_report())):
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
        assert min(pixels.shape) > 150 and pixels.std() > 10  # axes, marks and text, not an empty canvas


_PROBE = """<script>window.__errors = [];
window.addEventListener('error', function (e) {
  __errors.push(String(e.message || (e.target && e.target.src))); }, true);
console.error = function () { __errors.push('console.error: ' + Array.from(arguments).join(' ')); };
window.addEventListener('load', function () { var p = document.createElement('pre'); p.id = 'probe';
  p.textContent = JSON.stringify({errors: __errors, images: Array.from(document.images).map(function (i) {
    return [i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width]; })});
  document.body.appendChild(p); });</script>"""


def chromium(args, page):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                           "--virtual-time-budget=5000", *args, page.as_uri()], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (bash setup.sh test installs it "
                                             "with apt-get when run as root)")
def test_chromium_renders_the_page_without_errors_and_shows_every_plot(tmp_path):
    html = report_html(sample_report())
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / "shot.png"
    result = chromium(["--hide-scrollbars", "--window-size=1200,2600", f"--screenshot={shot}"], page)
    assert "CONSOLE" not in result.stderr, result.stderr  # Chromium logs every console message of the page
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2600, 1200) and pixels.std() > 10
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    dom = chromium(["--dump-dom"], probed).stdout
    state = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1).replace("&quot;", '"'))
    assert state["errors"] == []
    assert len(state["images"]) == 3 and all(w > 150 and h > 150 and shown > 100 for w, h, shown in state["images"])
