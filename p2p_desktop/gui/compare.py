"""Two runs side by side: adversarial images, perturbation heatmaps on one shared colour scale,
probabilities and metrics. Views of the same geometry share zoom and pan."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

import pyqtgraph as pg

from p2p_desktop.gui.imageview import ImagePane, colormap
from p2p_desktop.gui.results import MetricsTable, ProbabilityChart, metric_rows
from p2p_desktop.metrics.perturbation import PerturbationMap

__all__ = ["CompareView"]


class CompareView(QWidget):
    """Two runs from the history side by side."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.entries: tuple = ()
        self.placeholder = QLabel("Select two runs in the History (Ctrl+click) and press "
                                  "“Compare selected”.")
        self.placeholder.setObjectName("placeholder")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.columns = []
        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        for col in range(2):
            title = QLabel("")
            title.setObjectName("heading")
            title.setWordWrap(True)
            title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # a UID never widens it
            adv = ImagePane("Adversarial")
            heat = ImagePane("δ, shared scale")
            chart = ProbabilityChart()
            chart.setTitle("Probabilities", color="#333", size="9pt")
            chart.setMinimumHeight(120)
            bar = pg.ColorBarItem(values=(-1, 1), colorMap=colormap("signed"), interactive=False,
                                  rounding=1e-6, width=12)
            bar.setImageItem(heat.image_item)
            heat.addItem(bar, row=1, col=1)
            table = MetricsTable()
            grid.addWidget(title, 0, 2 * col, 1, 2)
            grid.addWidget(adv, 1, 2 * col)
            grid.addWidget(heat, 1, 2 * col + 1)
            grid.addWidget(chart, 2, 2 * col)
            grid.addWidget(table, 2, 2 * col + 1)
            self.columns.append({"title": title, "adversarial": adv, "heatmap": heat, "chart": chart,
                                 "metrics": table, "colorbar": bar})
        grid.setRowStretch(1, 3)
        grid.setRowStretch(2, 2)
        self.content = QWidget()
        self.content.setLayout(grid)
        self.content.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.placeholder)
        layout.addWidget(self.content, 1)

    def show_pair(self, a, b) -> None:
        """Compare two RunEntry objects."""
        self.entries = (a, b)
        self.placeholder.setVisible(False)
        self.content.setVisible(True)
        maps = [PerturbationMap(e.result.original, e.result.adversarial) for e in self.entries]
        top = max(m.scale("signed") for m in maps)
        first = self.columns[0]
        same_geometry = a.result.original.shape[:2] == b.result.original.shape[:2]
        for col, entry, pm in zip(self.columns, self.entries, maps):
            r = entry.result
            col["title"].setText(f"<b>{html.escape(entry.title)}</b><br>{html.escape(entry.verdict)}")
            col["title"].setToolTip(f"{entry.title}\n{entry.verdict}")
            col["adversarial"].set_image(r.adversarial, auto_range=True)
            col["heatmap"].set_image(pm.signed(), levels=(-top, top), auto_range=True)
            col["colorbar"].setLevels((-top, top))
            col["chart"].set_probs(r.classes, r.original_probs, r.adversarial_probs)
            col["metrics"].set_rows(metric_rows(r))
        for col in self.columns:
            for key in ("adversarial", "heatmap"):
                pane = col[key]
                if pane is first["adversarial"]:
                    continue
                if same_geometry or col is first:
                    pane.link(first["adversarial"])
                else:
                    pane.unlink()
        if not same_geometry:
            self.columns[1]["heatmap"].link(self.columns[1]["adversarial"])
