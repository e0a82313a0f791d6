"""Live view of a running attack: progress bar (iterations, ETA), loss and class probabilities.

Step events arrive as fast as the attack produces them; they are buffered and drawn at most
every ``REFRESH_MS``, so the event loop stays responsive whatever the iteration rate.
"""

from __future__ import annotations

import math

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QBoxLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSizePolicy,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

import pyqtgraph as pg

from p2p_desktop.gui.elide import ElidedLabel

__all__ = ["RunMonitor", "format_duration", "CLASS_COLOURS"]

REFRESH_MS = 250
#: Below twice this width the two plots are stacked rather than side by side.
NARROW_PLOT_WIDTH = 280
CLASS_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def format_duration(seconds: float) -> str:
    """``seconds`` as "42 s", "3 min 05 s" or "1 h 02 min"; "–" when unknown or negative."""
    if not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def legend_title(title: str, entries) -> str:
    """A plot title naming each series in its colour (``━ name``): a legend that never covers data."""
    import html

    keys = " ".join(f"<span style='color:{colour}'>━&nbsp;{html.escape(str(name))}</span>"
                    for name, colour in entries)
    return f"{html.escape(title)}: {keys}" if keys else html.escape(title)


def _plot(title: str, y_label: str) -> pg.PlotWidget:
    plot = pg.PlotWidget(background="w")
    plot.setTitle(title, color="#333", size="9pt")
    plot.setLabel("bottom", "iteration")
    plot.setLabel("left", y_label)
    plot.showGrid(x=True, y=True, alpha=0.25)
    plot.setMinimumHeight(100)
    plot.getAxis("left").setWidth(44)  # tick values and the axis label side by side, never overlapping
    plot.setMouseEnabled(x=False, y=False)
    plot.hideButtons()
    plot.disableAutoRange()
    plot.getAxis("left").enableAutoSIPrefix(False)
    return plot


class RunMonitor(QWidget):
    """Progress and live plots of the current job."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        # a run's title names its file (a PACS study: its UID): wrapped at spaces and never
        # widening the panel (an unbroken UID is cut; the tooltip has it), the outcome at its end
        self.title = QLabel("No job running")
        self.title.setWordWrap(True)
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.title.setObjectName("heading")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.eta = ElidedLabel("", mode=Qt.TextElideMode.ElideRight)  # status lines name files too
        self.eta.setObjectName("muted")
        self.eta.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.loss_plot = _plot("Loss", "loss")
        self.prob_plot = _plot("Class probabilities", "p")
        self.prob_plot.setYRange(0, 1.04, padding=0)
        self.prob_plot.getAxis("left").setTicks([[(0.0, "0"), (0.5, "0.5"), (1.0, "1")]])
        # the classes are named in the title, in their curve colours: no legend over the curves
        self.loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen("#444", width=2))
        self.prob_curves: dict[str, pg.PlotDataItem] = {}

        # title and ETA on lines of their own (a changing text never re-lays out the plots); the
        # plots side by side when the panel is wide, one above the other in a narrow column
        self.plots = QBoxLayout(QBoxLayout.Direction.LeftToRight)
        self.plot_tabs = QTabWidget()  # the narrow column's arrangement: one plot at a time, full size
        self.plot_tabs.setDocumentMode(True)
        self.plot_tabs.setTabPosition(QTabWidget.TabPosition.South)
        self.plots.addWidget(self.plot_tabs)
        self._wide: bool | None = None
        self._arrange(wide=True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.title)
        bar = QHBoxLayout()
        bar.addWidget(self.progress, 3)
        bar.addWidget(self.eta, 2)
        layout.addLayout(bar)
        layout.addLayout(self.plots, 1)

        self.steps: list[int] = []
        self.losses: list[float] = []
        self.probs: dict[str, list[float]] = {}
        self.total = 0
        self.last_event = None
        self._span = 0
        self._loss_range: tuple[float, float] | None = None
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.flush)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self._arrange(self.width() >= 2 * NARROW_PLOT_WIDTH)

    def _arrange(self, wide: bool) -> None:
        """Loss and probabilities side by side when the panel is wide; in a narrow column, tabs."""
        if wide == self._wide:
            return
        self._wide = wide
        plots = ((self.loss_plot, "Loss"), (self.prob_plot, "Probabilities"))
        if wide:
            self.plot_tabs.clear()
            for plot, _name in plots:
                self.plots.addWidget(plot, 1)
                plot.show()
            self.plot_tabs.hide()
        else:
            for plot, name in plots:
                self.plots.removeWidget(plot)
                self.plot_tabs.addTab(plot, name)
            self.plot_tabs.show()

    def start(self, title: str, total: int, classes=()) -> None:
        """Clear the plots for a new run of ``total`` iterations (0: unknown yet)."""
        self.steps, self.losses = [], []
        self.probs = {c: [] for c in classes}
        self.total = max(int(total), 0)
        self.last_event = None
        self._span = 0
        self._loss_range = None
        self.title.setText(title)
        self.title.setToolTip(title)
        self.eta.setText("starting…")
        self.progress.setRange(0, max(self.total, 1))
        self.progress.setValue(0)
        self.progress.setFormat(f"0 / {self.total} it" if self.total else "loading…")
        self.loss_curve.setData([], [])
        for curve in self.prob_curves.values():
            self.prob_plot.removeItem(curve)
        self.prob_curves.clear()
        for i, c in enumerate(classes):
            self._curve(c, i)
        self.prob_plot.setTitle(legend_title("p", [
            (c, CLASS_COLOURS[i % len(CLASS_COLOURS)]) for i, c in enumerate(classes)]), color="#333", size="9pt")
        self._timer.start()

    def _curve(self, cls: str, index: int) -> pg.PlotDataItem:
        curve = self.prob_curves.get(cls)
        if curve is None:
            colour = CLASS_COLOURS[index % len(CLASS_COLOURS)]
            curve = self.prob_plot.plot([], [], pen=pg.mkPen(colour, width=2), name=cls)
            self.prob_curves[cls] = curve
        return curve

    def set_status(self, text: str) -> None:
        if self.last_event is None:
            self.eta.setText(text)

    def add_event(self, event) -> None:
        """Record one StepEvent (cheap; drawing happens on the refresh timer)."""
        self.last_event = event
        self.steps.append(int(event.step))
        self.losses.append(float(event.loss))
        for c, p in event.probs.items():
            self.probs.setdefault(c, []).append(float(p))
        self.total = max(self.total, int(event.total))
        self._dirty = True

    def flush(self) -> None:
        """Draw what arrived since the last refresh."""
        if not self._dirty:
            return
        self._dirty = False
        ev = self.last_event
        self.progress.setRange(0, max(self.total, 1))
        self.progress.setValue(min(ev.step, self.total))
        self.progress.setFormat(f"{ev.step} / {self.total} it")
        remaining = (ev.elapsed / ev.step) * (self.total - ev.step) if ev.step else float("nan")
        verdict = "" if ev.success is None else (" · adversarial" if ev.success else "")
        self.eta.setText(f"elapsed {format_duration(ev.elapsed)} · ETA {format_duration(remaining)}{verdict}")
        # The x axis grows in doublings, so axes are redrawn rarely (redrawing them dominates
        # the GUI thread's cost during a run); a lone first step is drawn as a dot.
        span = min(max(self.total, 1), max(8, 1 << int(ev.step).bit_length()))
        if span != self._span:
            self._span = span
            for plot in (self.loss_plot, self.prob_plot):
                plot.setXRange(0.5, span + 0.5, padding=0)
                axis = plot.getAxis("bottom")
                if span <= 10:
                    axis.setTickSpacing(major=1, minor=1)  # whole iterations only
                else:
                    axis.setTickSpacing()
        lo, hi = min(self.losses), max(self.losses)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            lo, hi = 0.0, 1.0
        if self._loss_range is None or lo < self._loss_range[0] or hi > self._loss_range[1]:
            margin = max(hi - lo, abs(hi) * 0.1, 1e-3) * 0.25
            self._loss_range = (lo - margin, hi + margin)
            self.loss_plot.setYRange(*self._loss_range, padding=0)
        symbol = "o" if len(self.steps) == 1 else None
        self.loss_curve.setData(self.steps, self.losses, symbol=symbol, symbolSize=6, symbolBrush="#444")
        for i, (c, values) in enumerate(self.probs.items()):
            colour = CLASS_COLOURS[i % len(CLASS_COLOURS)]
            self._curve(c, i).setData(self.steps[-len(values):], values, symbol=symbol, symbolSize=6,
                                      symbolBrush=colour, symbolPen=None)

    def finish(self, text: str, completed: bool = True) -> None:
        """Stop refreshing; ``completed`` fills the bar (a cancelled run keeps its count)."""
        self.flush()
        self._timer.stop()
        self.title.setText(text)
        self.title.setToolTip(text)
        if self.last_event is not None:
            if completed:
                self.progress.setValue(self.progress.maximum())
            self.eta.setText(f"{self.last_event.step} iterations in {format_duration(self.last_event.elapsed)}")
        else:
            self.eta.setText("")
            self.progress.setFormat("idle")
