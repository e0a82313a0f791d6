"""The report as a PDF (A4), laid out with fpdf2 in DejaVu Sans (bundled with matplotlib) so
Greek letters and arrows print."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from p2p_desktop.export.report.content import (
    FAILURE_COLOUR,
    SUCCESS_COLOUR,
    BatchReport,
    RunReport,
)

__all__ = ["render_pdf"]


def _fonts_dir() -> Path | None:
    try:
        import matplotlib

        d = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        return d if (d / "DejaVuSans.ttf").is_file() else None
    except Exception:  # noqa: BLE001 - fall back to the core font
        return None


class _Pdf:
    """fpdf2 with DejaVu Sans (Unicode) when available, else Helvetica (Latin-1 only)."""

    def __init__(self, title: str) -> None:
        from fpdf import FPDF

        self.pdf = FPDF(orientation="P", unit="mm", format="A4")
        self.pdf.set_auto_page_break(auto=True, margin=14)
        self.pdf.set_margins(12, 12, 12)
        self.pdf.set_title(title)
        self.pdf.set_creator("p2p-desktop")
        fonts = _fonts_dir()
        if fonts is not None:
            self.pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
            self.pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
            self.family, self.unicode = "DejaVu", True
        else:  # pragma: no cover - matplotlib always ships DejaVu
            self.family, self.unicode = "Helvetica", False
        self.pdf.add_page()

    def text(self, s: str) -> str:
        return s if self.unicode else s.encode("latin-1", "replace").decode("latin-1")

    @property
    def width(self) -> float:
        return self.pdf.w - self.pdf.l_margin - self.pdf.r_margin

    def heading(self, s: str, size: float = 12) -> None:
        self.pdf.set_font(self.family, "B", size)
        self.pdf.ln(2)
        self.pdf.multi_cell(0, size * 0.5, self.text(s), new_x="LMARGIN", new_y="NEXT")
        self.pdf.ln(1)

    def para(self, s: str, size: float = 9, color: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.pdf.set_font(self.family, "", size)
        self.pdf.set_text_color(*color)
        self.pdf.multi_cell(0, size * 0.5, self.text(s), new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_text_color(0, 0, 0)

    def kv(self, rows: list[tuple[str, str]]) -> None:
        self.table(["", ""], [[k, v] for k, v in rows], widths=(0.3, 0.7), headings=False)

    def table(self, columns: list[str], rows: list[list[str]], widths: Sequence[float] | None = None,
              headings: bool = True, size: float = 7.5) -> None:
        from fpdf.enums import WrapMode

        if not rows:
            return
        self.pdf.set_font(self.family, "", size)
        ncol = len(columns)
        widths = widths or [1.0 / ncol] * ncol
        with self.pdf.table(col_widths=[w * 100 for w in widths], width=self.width, text_align="LEFT",
                            first_row_as_headings=headings, wrapmode=WrapMode.CHAR, line_height=size * 0.5,
                            padding=0.8) as table:
            if headings:
                row = table.row()
                for c in columns:
                    row.cell(self.text(c))
            for values in rows:
                row = table.row()
                for v in values:
                    row.cell(self.text(str(v)))
        self.pdf.ln(2)

    def image(self, png: bytes, w: float, x: float | None = None, y: float | None = None) -> float:
        """Place a PNG ``w`` mm wide; returns its height in mm."""
        from PIL import Image

        with Image.open(io.BytesIO(png)) as im:
            h = w * im.height / max(im.width, 1)
        self.pdf.image(io.BytesIO(png), x=x, y=y, w=w, h=h)
        return h

    def ensure(self, height: float) -> None:
        if self.pdf.get_y() + height > self.pdf.h - self.pdf.b_margin:
            self.pdf.add_page()

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def _rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def render_pdf(report: RunReport | BatchReport) -> bytes:
    """The report as a PDF (A4)."""
    doc = _Pdf(report.title)
    doc.heading(report.title, 15)
    doc.para(f"generated {report.created} by p2p-desktop — research use only, not for diagnosis", 8, (90, 90, 90))
    if isinstance(report, RunReport):
        colour = _rgb(SUCCESS_COLOUR if report.success else FAILURE_COLOUR)
        doc.pdf.ln(1)
        doc.para(report.verdict, 12, colour)
        for w in report.warnings:
            doc.para(f"Warning: {w}", 9, (150, 90, 0))
        # images in one row of four
        gap = 3.0
        w = (doc.width - gap * (len(report.images) - 1)) / max(len(report.images), 1)
        heights = []
        for _, png in report.images:
            from PIL import Image

            with Image.open(io.BytesIO(png)) as im:
                heights.append(w * im.height / max(im.width, 1))
        row_h = max(heights, default=0) + 6
        doc.ensure(row_h)
        y0 = doc.pdf.get_y() + 1
        for i, (caption, png) in enumerate(report.images):
            x = doc.pdf.l_margin + i * (w + gap)
            h = doc.image(png, w, x=x, y=y0)
            doc.pdf.set_xy(x, y0 + h + 0.5)
            doc.pdf.set_font(doc.family, "", 6.5)
            doc.pdf.multi_cell(w, 3, doc.text(caption), align="C")
        doc.pdf.set_xy(doc.pdf.l_margin, y0 + row_h)
        for caption, png in report.charts:
            doc.heading(caption[:1].upper() + caption[1:], 10)
            from PIL import Image

            with Image.open(io.BytesIO(png)) as im:
                ratio = im.height / max(im.width, 1)
            w = min(doc.width * 0.7, 125.0)
            doc.ensure(w * ratio + 2)
            x = doc.pdf.l_margin + (doc.width - w) / 2
            h = doc.image(png, w, x=x, y=doc.pdf.get_y())
            doc.pdf.set_y(doc.pdf.get_y() + h + 2)
        for heading, rows in report.sections:
            doc.ensure(20)
            doc.heading(heading, 10)
            doc.kv(rows)
    else:
        doc.heading("Run", 10)
        doc.kv(report.meta)
        for caption, png in report.charts:
            doc.heading(caption[:1].upper() + caption[1:], 10)
            w = min(doc.width * 0.8, 150.0)
            doc.ensure(40)
            h = doc.image(png, w, x=doc.pdf.l_margin, y=doc.pdf.get_y())
            doc.pdf.set_y(doc.pdf.get_y() + h + 2)
        for heading, columns, rows in report.tables:
            doc.ensure(20)
            doc.heading(heading, 10)
            doc.table(columns, rows, size=6.5 if len(columns) > 6 else 7.5)
    if report.notes:
        doc.heading("Notes", 10)
        for n in report.notes:
            doc.para(f"• {n}", 8)
    doc.ensure(20)
    doc.heading("Output files", 10)
    if report.outputs:
        doc.table(["kind", "file", "sha256"], [[o["kind"], o["path"], o["sha256"]] for o in report.outputs],
                  widths=(0.14, 0.36, 0.5))
    else:
        doc.para("no other outputs", 8)
    return doc.output()
