"""report.html: one self-contained page (figures embedded, no external resource), every value escaped,
rendered by a real browser (headless Chromium) with its tables and plots."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from medssl.study.report import write_report
from medssl.study.stats import study_statistics
from tests.study.test_report import _study

HOSTILE = '<script>alert("x")</script> & <img src=http://example.org/x.png>'
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A written report (random + mocov2, 2 budgets x 3 seeds, 2 labels) with a hostile warning and config."""
    d = tmp_path_factory.mktemp("report")
    results = _study(d, {"random": 0.3, "mocov2": 0.8})
    results["auc_A"], results["auc_B"] = 0.7, 0.6
    results.loc[results.init == "mocov2", "auc_A"] = 0.8
    summary, paired, _ = study_statistics(results, d, n_bootstrap=200)
    write_report(d, results, summary=summary, paired=paired, prevalence={"A": 0.4, "B": 0.3},
                 config_text=f"name: test\nnote: {HOSTILE}", data_notes="tiny **data**",
                 warnings=["something is off", HOSTILE], search_text="- `linear`: grid here")
    return {"dir": d, "path": d / "report.html", "summary": summary, "paired": paired}


def _summary_cell(summary, init="mocov2", budget="100") -> str:
    r = summary[(summary.init == init) & (summary.budget == budget)].iloc[0]
    return f"{r.mean_auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"


def test_html_report_is_self_contained_escaped_and_has_every_section(report):
    text = report["path"].read_text()
    # nothing to fetch: no scripts, stylesheets, fonts or remote sources; images are data URIs
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text
    assert not re.search(r'(?:src|href)="(?!data:image/png;base64,)', text)
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == 2   # label efficiency + class gains
    # every value escaped: the hostile text shows as text, in the warnings and in the config <pre>
    assert text.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=http://") == 2
    assert text.index('id="warnings"') < text.index('id="summary"')            # warnings at the top
    for section in ("overview", "summary", "paired", "labels", "search", "per-class", "data-notes", "config",
                    "software"):
        assert f'id="{section}"' in text, section
    assert "<strong>data</strong>" in text and "<code>linear</code>" in text  # the prose marks, escaped first
    assert _summary_cell(report["summary"]) in text
    # aggregates only: the predictions' patient ids and image paths never reach the page
    assert "pid-" not in text and "img0.png" not in text


class _Dom(HTMLParser):
    """Rows of each <table id=...> (cell texts) and the src of every <img> in a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self._table, self._row, self._cell = {}, [], None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", f"table{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return exe


def test_html_report_renders_in_headless_chromium(report, tmp_path):
    exe = _chromium()
    url = report["path"].resolve().as_uri()
    flags = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    proc = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "</html>" in proc.stdout, proc.stderr[-2000:]
    dom = _Dom()
    dom.feed(proc.stdout)

    # the summary table as the browser parsed it: the mocov2 / linear row with its numbers per budget
    rows = {tuple(r[:2]): r[2:] for r in dom.tables["summary-table"][1:]}
    assert rows[("mocov2", "linear")] == [_summary_cell(report["summary"], "mocov2", b) for b in ("50", "100")]
    assert set(rows) == {("mocov2", "linear"), ("random", "linear")}
    paired = {tuple(r[:2]): r[2:] for r in dom.tables["paired-table"][1:]}
    p = report["paired"][(report["paired"].init == "mocov2") & (report["paired"].budget == "50")].iloc[0]
    assert paired[("mocov2", "linear")][0].startswith(f"{p['diff']:+.3f} [{p.ci_low:+.3f}, {p.ci_high:+.3f}], p ")
    assert ["50", "50", "25", "75"] in dom.tables["labels-table"]

    # the plots: data-URI PNGs whose bytes decode to real figures
    pngs = [s for s in dom.imgs if s.startswith("data:image/png;base64,")]
    assert len(pngs) == 2 == len(dom.imgs)
    for src in pngs:
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(raw)) as im:
            assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 200

    # and it renders: a tall screenshot is not blank and shows the plot's coloured lines
    shot = tmp_path / "page.png"
    proc = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,3000", url], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    assert pixels.std() > 10                                   # not a blank page
    blue = np.abs(pixels - [31, 119, 180]).sum(-1) < 60        # matplotlib's first line colour (C0)
    assert blue.sum() > 500, "the embedded plot did not render"
