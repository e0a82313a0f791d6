"""Results of one run: original | adversarial | perturbation heatmap (linked zoom/pan), the
interactive heatmap (signed/absolute, amplification, colour bar levels, overlay, hover
readout, rectangle ROI statistics, lesion energy), the probability shift, the metrics and,
for P2P, the learned prompt's nearest words. All numbers come from the core
(:class:`~p2p_desktop.metrics.perturbation.PerturbationMap`, ``AttackResult``)."""

from __future__ import annotations

import html
import math

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

import pyqtgraph as pg

from p2p_desktop.export.report import (
    DELTA_UNITS,
    FAILURE_COLOUR,
    SUCCESS_COLOUR,
    attack_detail_rows,
    nearest_word_lines,
)
from p2p_desktop.gui.elide import ElidedLabel
from p2p_desktop.gui.imageview import ImagePane, colormap
from p2p_desktop.gui.monitor import legend_title
from p2p_desktop.metrics.perturbation import MODES, PerturbationMap

__all__ = ["ResultsView", "ProbabilityChart", "MetricsTable", "metric_rows", "format_words"]

#: The heatmap pane's title and the colour bar's label, per mode (units stated).
HEATMAP_TITLES = {"signed": "δ = adversarial − original",
                  "absolute": "|δ|, largest over channels"}
COLORBAR_LABELS = {"signed": f"δ, {DELTA_UNITS}", "absolute": f"|δ|, {DELTA_UNITS}"}
COLORBAR_AXIS_WIDTH = 58
READOUT_HINT = "Hover over an image to read its pixel values and δ."
BEFORE_COLOUR = "#8fa3bf"
AFTER_COLOUR = "#e07b39"


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "∞"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _home_as_tilde(text: str) -> str:
    """Paths under the user's home shown as ``~/…`` (shorter, and no user name on screen)."""
    from pathlib import Path

    home = str(Path.home())
    return text.replace(home + "/", "~/") if home not in ("", "/") else text


def _small_font():
    from PySide6.QtGui import QFont

    font = QFont()
    font.setPointSizeF(7.5)
    return font


def oracle_row(result) -> tuple[str, str, str]:
    """The phantom label-preservation oracle's verdict (p2p_desktop.phantoms.oracle) as a row."""
    o = (result.info or {}).get("label_oracle") if isinstance(result.info, dict) else None
    if not o or o.get("verdict") is None:
        return ("Label kept?", "n/a", (o or {}).get("reason") or "judged on phantoms with a generator record only")
    value = o["verdict"] + {True: " (valid success)", False: "", None: ""}[o.get("valid_success")]
    return ("Label kept?", value, "Phantom oracle: the same breast rendered under every class; " + o.get("reason", ""))


def metric_rows(result) -> list[tuple[str, str, str]]:
    """(name, value, tooltip) rows for the metrics table, one per row of the metric table
    (:data:`p2p_desktop.metrics.METRICS`: label, unit, direction, format); a missing metric says why."""
    from p2p_desktop.metrics.table import METRICS

    m = result.metrics
    notes = list(result.notes)

    def why(row) -> str:
        return next((n for n in notes if row.key.lower() in n.lower() or row.label.lower() in n.lower()), "")

    rows = []
    for row in METRICS.values():
        if row.key not in m:
            continue  # a batch-only figure (FID), or a result from before the metric existed
        value = m[row.key]
        text = "—" if value is None or (isinstance(value, float) and math.isnan(value)) else row.fmt.format(value)
        better = "higher" if row.higher_is_better else "lower"
        tip = (why(row) if value is None else "") or f"{row.description} ({better} is better)"
        rows.append((row.heading, text, tip))
    for key, value in m.items():
        if key not in METRICS:
            rows.append((key, _fmt(value), ""))
    rows += [
        ("Result", "success" if result.success else "failed",
         "Judged on the image as written (resampled to the source and quantised)"),
        ("Prediction", f"{result.original_label} → {result.adversarial_label}", f"true class: {result.true_label}"),
        oracle_row(result),
        ("Target", result.target or "untargeted", ""),
        ("Iterations", str(result.iterations), ""),
        ("Time", f"{result.seconds:.2f} s", ""),
        ("Seed", str(result.seed), ""),
        ("Device", str(result.device), ""),
    ]
    return rows


def format_words(words) -> list[str]:
    """The learned prompt's nearest vocabulary words as lines, words only (byte-level BPE
    tokens decoded, lone bytes dropped): ``token → word (cos), …`` — as in the report."""
    return nearest_word_lines(words)


class ProbabilityChart(pg.PlotWidget):
    """Bar chart of each class probability before and after the attack."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent=parent, background="w")
        self.setTitle(legend_title("Class probabilities", [("before", BEFORE_COLOUR), ("after", AFTER_COLOUR)]),
                      color="#333", size="9pt")  # the key in the title: nothing covers the bars
        self.setYRange(0, 1.04, padding=0)
        self.getAxis("left").setTicks([[(v / 5, f"{v / 5:.1f}") for v in range(6)]])
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.showGrid(y=True, alpha=0.25)
        self.before = pg.BarGraphItem(x=[], height=[], width=0.38, brush=BEFORE_COLOUR, pen=None)
        self.after = pg.BarGraphItem(x=[], height=[], width=0.38, brush=AFTER_COLOUR, pen=None)
        self.addItem(self.before)
        self.addItem(self.after)
        self.setMinimumHeight(110)
        self.values: tuple[list[float], list[float]] = ([], [])
        self.classes: list[str] = []

    def set_probs(self, classes, before: dict, after: dict) -> None:
        x = np.arange(len(classes), dtype=float)
        b = [float(before.get(c, 0.0)) for c in classes]
        a = [float(after.get(c, 0.0)) for c in classes]
        self.values = (b, a)
        self.before.setOpts(x=x - 0.2, height=b, width=0.38)
        self.after.setOpts(x=x + 0.2, height=a, width=0.38)
        self.classes = [str(c) for c in classes]
        self.getAxis("bottom").setToolTip(", ".join(self.classes))
        self._label_classes()
        self.setXRange(-0.6, len(classes) - 0.4, padding=0)

    def _label_classes(self) -> None:
        """Class names under their bars, elided to the room each bar has (in a narrow chart,
        "benign malignant normal" never runs together); the axis' tooltip names them all."""
        from PySide6.QtGui import QFont, QFontMetrics

        axis = self.getAxis("bottom")
        n = max(len(self.classes), 1)
        room = max(int(self.getPlotItem().vb.width() / n) - 8, 12)
        fm = QFontMetrics(axis.style.get("tickFont") or QFont())
        axis.setTicks([[(i, fm.elidedText(c, Qt.TextElideMode.ElideRight, room))
                        for i, c in enumerate(self.classes)]])

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if self.__dict__.get("classes"):
            self._label_classes()


class MetricsTable(QTableWidget):
    """Two-column table of metric names and values, each row with its tooltip."""

    def __init__(self, parent=None) -> None:
        super().__init__(0, 2, parent)
        self.setHorizontalHeaderLabels(["Metric", "Value"])
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setTabKeyNavigation(False)  # Tab moves on to the next control (arrows move between cells)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setDefaultSectionSize(20)

    def set_rows(self, rows) -> None:
        self.setRowCount(len(rows))
        for r, (name, value, tip) in enumerate(rows):
            a, b = QTableWidgetItem(name), QTableWidgetItem(value)
            for item in (a, b):
                item.setToolTip(tip)
            self.setItem(r, 0, a)
            self.setItem(r, 1, b)

    def value(self, name: str) -> str | None:
        """The value shown in the row called ``name`` (a metric key such as ``ssim`` also works)."""
        from p2p_desktop.metrics.table import METRICS

        if name in METRICS:
            name = METRICS[name].heading
        for r in range(self.rowCount()):
            if self.item(r, 0).text() == name:
                return self.item(r, 1).text()
        return None


class ResultsView(QWidget):
    """Shows one :class:`~p2p_desktop.gui.history.RunEntry`."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.entry = None
        self.perturbation: PerturbationMap | None = None

        # one line: the run's title (elided, whole in the tooltip: a PACS study is named by its
        # UID) and its verdict; no file name can widen the window
        self.header = ElidedLabel("No results yet: choose an attack and press Run.")
        self.header.setObjectName("heading")
        self.verdict = QLabel("")
        self.verdict.setObjectName("heading")
        self.verdict.setTextFormat(Qt.TextFormat.RichText)
        self.toolbar = QToolBar()  # icons only: the title keeps the room (each has its tooltip)
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)

        self.original_pane = ImagePane("Original")
        self.adversarial_pane = ImagePane("Adversarial")
        self.heatmap_pane = ImagePane(HEATMAP_TITLES["signed"])
        self.adversarial_pane.link(self.original_pane)
        self.heatmap_pane.link(self.original_pane)
        for pane in (self.original_pane, self.adversarial_pane, self.heatmap_pane):
            pane.hovered.connect(self._on_hover)
        self.heatmap_item = self.heatmap_pane.image_item
        self.colorbar = pg.ColorBarItem(values=(-1, 1), colorMap=colormap("signed"), interactive=True,
                                        rounding=1e-6, width=12, label=COLORBAR_LABELS["signed"])
        self.colorbar.setImageItem(self.heatmap_item)
        self.heatmap_pane.addItem(self.colorbar, row=1, col=1)
        self.colorbar.axis.setStyle(tickFont=_small_font(), autoExpandTextSpace=True)
        self.colorbar.axis.enableAutoSIPrefix(False)  # plain numbers in the stated units, no "×0.001"
        self.colorbar.getAxis("left").setStyle(tickFont=_small_font())
        self.colorbar.axis.setWidth(COLORBAR_AXIS_WIDTH)  # room for "-0.0471" at any pane width
        self.colorbar.sigLevelsChanged.connect(self._on_bar_levels)
        # overlay: the heatmap in the bar's exact colours, fading to transparent near 0
        self.heat_overlay_item = pg.ImageItem()
        self.heat_overlay_item.setVisible(False)
        self.heat_overlay_item.setZValue(5)
        self.heatmap_pane.view.addItem(self.heat_overlay_item)

        self.roi = pg.RectROI([0, 0], [10, 10], pen=pg.mkPen("#ffd54f", width=2), movable=True,
                              rotatable=False, resizable=True)
        self.roi.addScaleHandle([0, 0], [1, 1])
        self.heatmap_pane.view.addItem(self.roi)
        self.roi.setZValue(20)
        self.roi.sigRegionChanged.connect(self._update_roi)

        # heatmap controls
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("Signed δ", "signed")
        self.mode_combo.addItem("Absolute |δ|", "absolute")
        self.mode_combo.setToolTip(f"δ = adversarial − original, in {DELTA_UNITS} (1 = black to white). "
                                   "Signed: channel mean of δ, blue darker / red brighter, centred on 0. "
                                   "Absolute: largest |δ| over the channels")
        self.amp_spin = QDoubleSpinBox()
        self.amp_spin.setRange(1.0, 1000.0)
        self.amp_spin.setDecimals(1)
        self.amp_spin.setValue(1.0)
        self.amp_spin.setPrefix("×")
        self.amp_spin.setToolTip("Amplification: narrows the colour range so small changes show")
        self.overlay_check = QCheckBox("Overlay on image")
        self.overlay_check.setToolTip("Draw the heatmap over the original image")
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(5, 100)
        self.opacity_slider.setValue(60)
        self.opacity_slider.setMaximumWidth(110)
        self.opacity_slider.setToolTip("Overlay strength: pixels whose value reaches (100 − strength)% of the "
                                       "colour bar's range are drawn in the bar's exact colours; smaller ones "
                                       "fade so the image shows through")
        self.opacity_slider.setEnabled(False)
        self.roi_check = QCheckBox("ROI")
        self.roi_check.setChecked(True)
        self.roi_check.setToolTip("A rectangle on the heatmap: drag to move, corner handles resize")
        self.mask_check = QCheckBox("Lesion mask")
        self.mask_check.setToolTip("Outline the lesion mask on the images")
        self.mask_check.setChecked(False)
        self.mode_combo.currentIndexChanged.connect(self._update_heatmap)
        self.amp_spin.valueChanged.connect(self._update_heatmap)
        self.overlay_check.toggled.connect(self._update_overlay)
        self.opacity_slider.valueChanged.connect(self._update_overlay)
        self.roi_check.toggled.connect(self._toggle_roi)
        self.mask_check.toggled.connect(self._update_masks)

        self.overlay_check.setText("Overlay")
        self.opacity_slider.setMaximumWidth(80)
        controls = QHBoxLayout()
        controls.addWidget(self.mode_combo)
        controls.addWidget(QLabel("Amplify"))
        controls.addWidget(self.amp_spin)
        controls.addWidget(self.overlay_check)
        controls.addWidget(self.opacity_slider)
        controls.addWidget(self.roi_check)
        controls.addWidget(self.mask_check)
        controls.addStretch(1)
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Fit the images to their panes (or double-click an image); "
                                   "they stay fitted when the window is resized")
        self.fit_button.clicked.connect(self.original_pane.fit)
        self.one_to_one_button = QPushButton("1:1")
        self.one_to_one_button.setToolTip("One image pixel per screen pixel")
        self.one_to_one_button.clicked.connect(self.original_pane.one_to_one)
        controls.addWidget(self.fit_button)
        controls.addWidget(self.one_to_one_button)

        self.readout = QLabel(READOUT_HINT)
        self.readout.setObjectName("readout")
        self.readout.setWordWrap(True)
        self.roi_label = QLabel("")
        self.roi_label.setObjectName("readout")
        self.roi_label.setWordWrap(True)
        self.lesion_label = QLabel("")
        self.lesion_label.setObjectName("readout")
        self.lesion_label.setWordWrap(True)

        self.chart = ProbabilityChart()
        self.metrics = MetricsTable()
        self.notes = QLabel("")
        self.notes.setWordWrap(True)
        self.notes.setTextFormat(Qt.TextFormat.RichText)
        self.notes.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.notes.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        notes_scroll = QScrollArea()
        notes_scroll.setWidgetResizable(True)
        notes_scroll.setWidget(self.notes)

        images = QWidget()
        img_row = QHBoxLayout(images)
        img_row.setContentsMargins(0, 0, 0, 0)
        img_row.setSpacing(3)
        for pane in (self.original_pane, self.adversarial_pane, self.heatmap_pane):
            img_row.addWidget(pane, 1)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(images, 1)
        top_layout.addLayout(controls)
        # the hover readout on a line of its own (never cut), ROI and lesion statistics below; a
        # fixed height: the layout does not jump when a readout appears or wraps
        stats_box = QWidget()
        stats_rows = QVBoxLayout(stats_box)
        stats_rows.setContentsMargins(0, 0, 0, 0)
        stats_rows.setSpacing(2)
        stats_rows.addWidget(self.readout)
        stats = QHBoxLayout()
        stats.setContentsMargins(0, 0, 0, 0)
        stats.addWidget(self.roi_label, 3)
        stats.addWidget(self.lesion_label, 2)
        stats_rows.addLayout(stats)
        self.readout.setWordWrap(False)
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        stats_box.setFixedHeight(4 * self.readout.fontMetrics().lineSpacing() + 8)
        for label in (self.readout, self.roi_label, self.lesion_label):
            label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.stats_box = stats_box
        top_layout.addWidget(stats_box)

        # the run's details (probabilities, metrics, notes): a panel of their own, which the
        # main window puts in a dock (movable, floatable, closable) so the images keep the room
        self.details = QSplitter(Qt.Orientation.Vertical)
        self.details.setObjectName("run-details")
        self.details.setChildrenCollapsible(True)
        self.details.addWidget(self.chart)
        self.details.addWidget(self.metrics)
        self.details.addWidget(notes_scroll)
        for i, stretch in enumerate((2, 3, 2)):
            self.details.setStretchFactor(i, stretch)
        self.metrics.setMinimumHeight(60)
        notes_scroll.setMinimumHeight(40)

        head = QHBoxLayout()
        head.addWidget(self.header, 1)
        head.addWidget(self.verdict)
        head.addWidget(self.toolbar)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(head)
        layout.addWidget(top, 1)

    # -- content ------------------------------------------------------------------------------------
    def show_entry(self, entry) -> None:
        """Show one run (a RunEntry: AttackResult + Study)."""
        self.entry = entry
        self.readout.setText(READOUT_HINT)  # never the previous run's values
        r, study = entry.result, entry.study
        mask = study.mask if study.mask is not None and study.mask.shape == r.original.shape[:2] else None
        self.perturbation = PerturbationMap(r.original, r.adversarial, mask)
        colour = SUCCESS_COLOUR if r.success else FAILURE_COLOUR  # as in the report
        verdict = r.outcome
        self.header.setText(entry.title)
        self.verdict.setText(f"<span style='color:{colour}'><b>{html.escape(verdict)}</b></span>"
                             f" &nbsp; {html.escape(r.original_label)} → {html.escape(r.adversarial_label)}")
        same_shape = self.original_pane.image_shape == tuple(r.original.shape[:2])
        self.original_pane.set_image(r.original, auto_range=False)
        self.adversarial_pane.set_image(r.adversarial, auto_range=False)
        self.heatmap_pane.set_base(r.original)
        self._update_heatmap()
        self._update_overlay()
        self._update_masks()
        if not same_shape:
            self._reset_roi()
        self._update_roi()
        self._update_lesion()
        self.chart.set_probs(r.classes, r.original_probs, r.adversarial_probs)
        self.metrics.set_rows(metric_rows(r))
        self._update_notes()
        self.original_pane.fit()  # every new run starts fitted (the linked panes follow)

    def _reset_roi(self) -> None:
        pm = self.perturbation
        if pm.mask is not None and pm.mask.any():
            rows, cols = np.nonzero(pm.mask)
            x, y = cols.min(), rows.min()
            w, h = cols.max() - x + 1, rows.max() - y + 1
        else:
            w, h = pm.width / 3, pm.height / 3
            x, y = (pm.width - w) / 2, (pm.height - h) / 2
        self.roi.blockSignals(True)
        self.roi.setPos((float(x), float(y)), update=False)
        self.roi.setSize((float(w), float(h)), update=True)
        self.roi.blockSignals(False)

    def mode(self) -> str:
        return self.mode_combo.currentData()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(mode))

    def heatmap_levels(self) -> tuple[float, float]:
        lo, hi = self.colorbar.levels()
        return float(lo), float(hi)

    def _update_heatmap(self, *_args) -> None:
        pm = self.perturbation
        if pm is None:
            return
        mode = self.mode()
        values, levels = pm.display(mode, self.amp_spin.value())
        self.heatmap_pane.set_image(values, levels=levels, auto_range=False)
        self.heatmap_pane.set_title(HEATMAP_TITLES[mode])
        self.colorbar.getAxis("left").setLabel(COLORBAR_LABELS[mode])
        self.colorbar.setColorMap(colormap(mode))
        self.colorbar.setLevels(levels)
        self._update_overlay()

    def overlay_rgba(self) -> np.ndarray | None:
        """The overlaid heatmap: each pixel in the colour bar's exact colour for its value, its
        alpha growing with |value| (opaque from (100 − strength)% of the bar's range up)."""
        pm = self.perturbation
        if pm is None:
            return None
        mode = self.mode()
        values = pm.map(mode).astype(np.float64)
        lo, hi = self.heatmap_levels()
        span = (hi - lo) or 1e-12
        unit = np.clip((values - lo) / span, 0.0, 1.0)
        rgba = colormap(mode).map(unit.reshape(-1), mode="byte").reshape(values.shape + (4,)).copy()
        top = max(abs(lo), abs(hi)) or 1e-12
        strength = self.opacity_slider.value() / 100.0
        opaque_from = max(1e-3, 1.0 - strength)
        alpha = np.clip(np.abs(values) / top / opaque_from, 0.0, 1.0)
        rgba[..., 3] = np.round(alpha * 255).astype(np.uint8)
        return rgba

    def _on_bar_levels(self, _bar) -> None:
        """Dragging the colour bar handles changes the heatmap levels (kept symmetric for δ)."""
        if self.perturbation is None:
            return
        lo, hi = self.heatmap_levels()
        top = max(abs(lo), abs(hi))
        if self.mode() == "signed" and not math.isclose(-lo, hi, rel_tol=1e-3):
            self.colorbar.blockSignals(True)
            self.colorbar.setLevels((-top, top))
            self.colorbar.blockSignals(False)
        if self.overlay_check.isChecked():
            self._update_overlay()

    def _update_overlay(self, *_args) -> None:
        on = self.overlay_check.isChecked() and self.perturbation is not None
        self.opacity_slider.setEnabled(self.overlay_check.isChecked())
        self.heatmap_pane.base_item.setVisible(on)
        self.heatmap_item.setOpacity(1.0)
        self.heatmap_item.setVisible(not on)  # (the colour bar stays linked to it)
        self.heat_overlay_item.setVisible(on)
        if on:
            self.heat_overlay_item.setImage(self.overlay_rgba(), autoLevels=False, levels=(0, 255))

    def _update_masks(self, *_args) -> None:
        mask = self.perturbation.mask if self.perturbation is not None else None
        self.mask_check.setEnabled(mask is not None)
        for pane in (self.original_pane, self.adversarial_pane):
            pane.set_mask(mask, visible=self.mask_check.isChecked(), opacity=0.8)

    def _toggle_roi(self, on: bool) -> None:
        self.roi.setVisible(on)
        self._update_roi()

    def roi_stats(self):
        """Statistics of δ inside the ROI rectangle (None when hidden or nothing shown)."""
        if self.perturbation is None or not self.roi.isVisible():
            return None
        pos, size = self.roi.pos(), self.roi.size()
        return self.perturbation.region_stats(pos.x(), pos.y(), size.x(), size.y())

    def _update_roi(self, *_args) -> None:
        s = self.roi_stats()
        if s is None:
            self.roi_label.setText("")
            return
        self.roi_label.setText(
            f"ROI {s.width}×{s.height} at ({s.x}, {s.y}): mean δ {s.mean:+.5f} · mean |δ| {s.abs_mean:.5f} · "
            f"max |δ| {s.max_abs:.4f} · L2 {s.l2:.4f} (energy {s.energy:.4g})")

    def _update_lesion(self) -> None:
        le = self.perturbation.lesion_energy() if self.perturbation is not None else None
        if le is None:
            self.lesion_label.setText("Lesion energy: no lesion mask for this study")
            return
        ratio = "∞" if math.isinf(le.density_ratio) else f"{le.density_ratio:.2f}×"
        self.lesion_label.setText(
            f"Lesion: {100 * le.inside_fraction:.1f}% of ‖δ‖² inside ({le.inside_pixels} px), "
            f"{100 * (1 - le.inside_fraction):.1f}% outside · energy per pixel inside/outside {ratio}")

    def _update_notes(self) -> None:
        from p2p_desktop.input_check import WARNING_PREFIX

        r = self.entry.result
        parts = []
        warnings = [n for n in r.notes if n.startswith(WARNING_PREFIX)]
        if warnings:
            parts.append("<span style='color:#7a4a00'><b>⚠ Input unlike the classifier's training data:</b><br>"
                         + "<br>".join(html.escape(w[len(WARNING_PREFIX):]) for w in warnings) + "</span>")
        words = r.info.get("nearest_words") if isinstance(r.info, dict) else None
        if words:
            parts.append("<b>Learned prompt, nearest words (cosine):</b><br>"
                         + "<br>".join(html.escape(line) for line in format_words(words)))
        elif r.attack == "p2p":
            parts.append("<b>Learned prompt:</b> no nearest words reported")
        details = [(k, v) for k, v in attack_detail_rows({k: v for k, v in (r.info or {}).items()
                                                          if k not in ("nearest_words", "label_oracle")})
                   if len(v) <= 160]
        if details:
            parts.append("<b>Attack details</b> (the verdict above is judged on the image as written):<br>"
                         + "<br>".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in details))
        others = [n for n in r.notes if n not in warnings]
        if others:
            parts.append("<b>Notes:</b><ul style='margin-left:-20px'>" + "".join(
                f"<li>{html.escape(_home_as_tilde(n))}</li>" for n in others) + "</ul>")
        cfg = ", ".join(f"{k}={v}" for k, v in r.config.items())
        parts.append(f"<b>Config:</b> {html.escape(cfg)}")
        self.notes.setText("<br>".join(parts))

    def _on_hover(self, row: int, col: int) -> None:
        pm, entry = self.perturbation, self.entry
        if pm is None or row < 0 or row >= pm.height or col >= pm.width:
            self.readout.setText(READOUT_HINT)
            return
        r = entry.result

        def px(a) -> str:
            v = np.asarray(a[row, col]).reshape(-1)
            return ", ".join(f"{x:.3f}" for x in v)

        d = pm.value_at(row, col)
        delta = ", ".join(f"{x:+.4f}" for x in d) if d is not None else ""
        self.readout.setText(f"x {col}, y {row} · original {px(r.original)} · adversarial {px(r.adversarial)} · "
                             f"δ {delta} ({DELTA_UNITS})")

