"""The report as one self-contained HTML document (images inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html

from p2p_desktop.export.report.content import (
    _FAILURE_BACKGROUND,
    _SUCCESS_BACKGROUND,
    FAILURE_COLOUR,
    SUCCESS_COLOUR,
    BatchReport,
    RunReport,
)

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI','DejaVu Sans',sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.6em}
.verdict{font-size:1.2em;font-weight:bold;padding:.5em .8em;border-radius:4px;display:inline-block}
.ok{background:SUCCESS_BG;color:SUCCESS_FG}.no{background:FAILURE_BG;color:FAILURE_FG}
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{border:1px solid #ddd;padding:.3em .5em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.k{width:28%;color:#555}
td.mono,span.mono{font-family:'DejaVu Sans Mono',monospace;word-break:break-all}
.grid{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;flex:1 1 22%;min-width:200px}
figure img{width:100%;image-rendering:pixelated;border:1px solid #ddd}figcaption{font-size:.85em;color:#555}
.chart img{max-width:100%}.notes li{margin:.2em 0}.muted{color:#777;font-size:.85em}
.warn{background:#fff4e0;color:#7a4a00;border-left:4px solid #e08a00;padding:.4em .7em}
""".replace("SUCCESS_BG", _SUCCESS_BACKGROUND).replace("SUCCESS_FG", SUCCESS_COLOUR) \
    .replace("FAILURE_BG", _FAILURE_BACKGROUND).replace("FAILURE_FG", FAILURE_COLOUR)


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f'<tr><td class="k">{html.escape(k)}</td><td class="mono">{html.escape(v)}</td></tr>'
                   for k, v in rows)
    return f"<table>{body}</table>"


def _grid_table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _outputs_html(outputs: list[dict[str, str]]) -> str:
    if not outputs:
        return "<p class='muted'>no other outputs</p>"
    return _grid_table(["kind", "file", "sha256"], [[o["kind"], o["path"], o["sha256"]] for o in outputs])


def render_html(report: RunReport | BatchReport) -> bytes:
    """One self-contained HTML document (images inlined as base64 PNG)."""
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(report.title)}</h1>",
             f"<p class='muted'>generated {html.escape(report.created)} by p2p-desktop — research use only, "
             "not for diagnosis</p>"]
    if isinstance(report, RunReport):
        cls = "ok" if report.success else "no"
        parts.append(f"<p class='verdict {cls}'>{html.escape(report.verdict)}</p>")
        for w in report.warnings:
            parts.append(f"<p class='warn'>⚠ Warning: {html.escape(w)}</p>")
        parts.append("<h2>Images</h2><div class='grid'>")
        for caption, png in report.images:
            parts.append(f"<figure>{_img_tag(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</div>")
        for caption, png in report.charts:
            parts.append(f"<h2>{html.escape(caption[:1].upper() + caption[1:])}</h2>"
                         f"<div class='chart'>{_img_tag(png, caption)}</div>")
        for heading, rows in report.sections:
            parts.append(f"<h2>{html.escape(heading)}</h2>{_kv_table(rows)}")
    else:
        parts.append(f"<h2>Run</h2>{_kv_table(report.meta)}")
        for caption, png in report.charts:
            parts.append(f"<h2>{html.escape(caption[:1].upper() + caption[1:])}</h2>"
                         f"<div class='chart'>{_img_tag(png, caption)}</div>")
        for heading, columns, rows in report.tables:
            parts.append(f"<h2>{html.escape(heading)}</h2>{_grid_table(columns, rows)}")
    if report.notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
        parts.append(f"<h2>Notes</h2><ul class='notes'>{items}</ul>")
    parts.append(f"<h2>Output files</h2>{_outputs_html(report.outputs)}")
    parts.append("</body></html>\n")
    return "".join(parts).encode("utf-8")
