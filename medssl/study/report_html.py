"""report.html: the study report as ONE self-contained page to open in any browser, offline.

Built from the same data as report.md (the `summary` and `paired` tables of
`medssl.study.stats.study_statistics`, the per-cell `results`), not by converting the Markdown:
one small function per section, every value html-escaped. The figures are embedded as base64
`data:image/png` URIs and the styling is an inline <style> block, so the page needs no other file,
no network, no fonts or scripts. Like report.md it shows aggregates only: no patient identifier, no
image path (the tables carry none).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from medssl import atomic
from medssl.study.report import (MODE_ORDER, _budget_columns, _fmt, _modes, _p, _signed, class_columns,
                                 class_gains, statistics_text)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td.key, th.key { text-align: left; }
.warnings { background: #fff4e5; border: 1px solid #f0a020; padding: 0.5rem 1rem; }
.warnings li { font-weight: 600; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.75rem; overflow-x: auto; font-size: 0.8rem; }
code { background: #f3f3f3; padding: 0 0.2rem; font-size: 0.9em; }
.muted { color: #666; }
"""


def esc(value) -> str:
    """Any value as html-escaped text (quotes too: values may land in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def prose(text: str) -> str:
    """The report's short Markdown-flavoured prose (`code`, **bold**, "- " bullets) as HTML.

    The text is escaped FIRST, then the few marks become tags, so nothing in it can inject markup.
    """
    def inline(s: str) -> str:
        s = esc(s)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)

    out, bullets = [], []
    for line in text.strip().splitlines():
        if line.lstrip().startswith("- "):
            bullets.append(f"<li>{inline(line.lstrip()[2:])}</li>")
            continue
        if bullets:
            out.append("<ul>" + "".join(bullets) + "</ul>")
            bullets = []
        if line.strip():
            out.append(f"<p>{inline(line)}</p>")
    if bullets:
        out.append("<ul>" + "".join(bullets) + "</ul>")
    return "\n".join(out)


def png_data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure(path: str | Path, alt: str) -> str:
    """An embedded figure (nothing when the PNG was not written)."""
    path = Path(path)
    if not path.is_file():
        return ""
    return f'<figure><img src="{png_data_uri(path)}" alt="{esc(alt)}"></figure>'


def html_table(header: Sequence, rows: Sequence[Sequence], *, keys: int = 0, table_id: str = "") -> str:
    """<table> with escaped cells; the first `keys` columns are left-aligned row labels."""
    cls = lambda j: ' class="key"' if j < keys else ""  # noqa: E731
    head = "".join(f"<th{cls(j)}>{esc(h)}</th>" for j, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(j)}>{esc(v)}</td>" for j, v in enumerate(r)) + "</tr>" for r in rows)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def grid_rows(table: pd.DataFrame, cell: Callable[[pd.Series], str],
              row_keys: Sequence[str] = ("init", "mode")) -> tuple[list[str], list[list[str]]]:
    """(header, rows): rows init x mode (modes in MODE_ORDER), one column per budget, as report.md's tables."""
    budgets = _budget_columns(table)
    header = list(row_keys) + [f"{b} ({n})" if str(b) != str(n) else str(b)
                               for b, n in zip(budgets["budget"], budgets["n_labeled"])]
    order = table.assign(_m=table["mode"].map(lambda m: MODE_ORDER.get(m, 9))).sort_values("_m", kind="stable")
    rows = []
    for keys, sub in order.groupby(list(row_keys), sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        cells = []
        for b in budgets["budget"]:
            r = sub[sub["budget"] == b]
            cells.append("" if r.empty else cell(r.iloc[0]))
        rows.append([*map(str, keys), *cells])
    return header, rows


def warnings_section(warnings: Sequence[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
    return f'<section class="warnings" id="warnings"><h2>Warnings</h2><ul>{items}</ul></section>'


def overview_section(results: pd.DataFrame, summary: pd.DataFrame, ci: float) -> str:
    budgets = list(dict.fromkeys(results.sort_values("n_labeled")["budget"]))
    line = (f"{len(results)} cells: inits {sorted(results['init'].unique())}, modes {_modes(results)}, budgets "
            f"{budgets}, label-subset seeds {sorted(results['seed'].unique().tolist())}.")
    return f'<section id="overview"><p>{esc(line)}</p>{prose(statistics_text(summary, ci))}</section>'


def summary_section(summary: pd.DataFrame, label_efficiency_png: Path) -> str:
    header, rows = grid_rows(summary, lambda r: f"{_fmt(r.mean_auc)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]")
    return ('<section id="summary"><h2>Mean test AUC by init and number of labeled images</h2>'
            '<p class="muted">Cells: mean AUC [CI] over label subsets; columns: budget (labeled images).</p>'
            + html_table(header, rows, keys=2, table_id="summary-table")
            + figure(label_efficiency_png, "label efficiency: mean test AUC vs labeled images, and paired "
                                           "difference vs random init") + "</section>")


def paired_section(paired: pd.DataFrame) -> str:
    if paired.empty:
        body = '<p class="muted">No pretrained init in this study: nothing to pair with the random init.</p>'
    else:
        header, rows = grid_rows(paired, lambda r: f"{_signed(r['diff'])} [{_signed(r.ci_low)}, "
                                                   f"{_signed(r.ci_high)}], p {_p(r.p_value)}")
        body = html_table(header, rows, keys=2, table_id="paired-table")
    return (f'<section id="paired"><h2>Pretrained init minus random init (paired)</h2>'
            f'<p class="muted">Cells: AUC difference [CI], two-sided p; same test patients and label subsets.</p>'
            f'{body}</section>')


def labels_section(summary: pd.DataFrame) -> str:
    if "n_val_labeled" not in summary.columns or summary.empty:
        return ""
    s = summary.sort_values("n_labeled").drop_duplicates("budget")
    rows = [[r["budget"], int(r["n_labeled"]), int(r["n_val_labeled"]), int(r["n_labels_total"])]
            for _, r in s.iterrows()]
    return ('<section id="labels"><h2>Labels used</h2><p>Each cell selects on a labelled validation subset; a '
            'site must provide both:</p>'
            + html_table(["budget", "training labels", "validation labels", "total labels"], rows, keys=1,
                         table_id="labels-table") + "</section>")


def per_class_section(results: pd.DataFrame, class_gains_png: Path) -> str:
    cols = class_columns(results)
    s = results.groupby(["init", "mode", "budget"], sort=False)[cols + ["n_labeled"]].mean().reset_index()
    s = s.assign(_m=s["mode"].map(lambda m: MODE_ORDER.get(m, 9))).sort_values(["_m", "init", "n_labeled"])
    rows = [[r["init"], r["mode"], r["budget"], *(_fmt(r[c]) for c in cols)] for _, r in s.iterrows()]
    out = ['<section id="per-class"><h2>Per-class AUC</h2>',
           html_table(["init", "mode", "budget", *(c[len("auc_"):] for c in cols)], rows, keys=3,
                      table_id="per-class-table")]
    gains = class_gains(results)
    if len(gains):
        wide = gains.pivot(index="label", columns="init", values="gain")
        inits = list(dict.fromkeys(gains["init"]))
        rows = [[label, *(_signed(wide.loc[label, i]) for i in inits)] for label in wide.index]
        out += ["<h3>AUC gain over random init (mean over modes, budgets and seeds)</h3>",
                html_table(["label", *inits], rows, keys=1, table_id="gains-table")]
    out += [figure(class_gains_png, "per-class AUC gain over random init, beside class prevalence"), "</section>"]
    return "".join(out)


def text_section(section_id: str, title: str, text: str) -> str:
    if not text or not text.strip():
        return ""
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>{prose(text)}</section>'


def config_section(config_text: str) -> str:
    return f'<section id="config"><h2>Configuration</h2><pre>{esc(config_text.strip())}</pre></section>'


def software_section(versions: dict[str, str]) -> str:
    return ('<section id="software"><h2>Software</h2>'
            + html_table(["package", "version"], list(versions.items()), keys=1) + "</section>")


def _analysis_section(out_dir: Path, analysis: dict | None) -> str:
    if not analysis:
        return ""
    from medssl.analyze.study import html_section

    return html_section(out_dir, analysis)


def write_html_report(out_dir: str | Path, results: pd.DataFrame, *, summary: pd.DataFrame, paired: pd.DataFrame,
                      config_text: str, versions: dict[str, str], data_notes: str = "",
                      warnings: Sequence[str] = (), search_text: str = "", ci: float = 0.95,
                      title: str = "medssl label-efficiency study", analysis: dict | None = None) -> Path:
    """Write out_dir/report.html (self-contained; embeds label_efficiency.png and class_gains.png
    from out_dir, which `write_report` draws first); return its path. analysis: init -> feature-analysis
    index.md, linked (not embedded) in a "Feature analysis" section (`medssl.analyze.study.html_section`)."""
    out_dir = Path(out_dir)
    body = [
        f"<h1>{esc(title)}</h1>",
        warnings_section(warnings),   # at the top: a reader must not miss them
        overview_section(results, summary, ci),
        summary_section(summary, out_dir / "label_efficiency.png"),
        paired_section(paired),
        labels_section(summary),
        text_section("search", "Hyperparameter selection (the same for every init)", search_text),
        per_class_section(results, out_dir / "class_gains.png"),
        text_section("data-notes", "What this data can and cannot show", data_notes),
        _analysis_section(out_dir, analysis),
        config_section(config_text),
        software_section(versions),
    ]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body></html>\n")
    return atomic.write_text(out_dir / "report.html", page)

