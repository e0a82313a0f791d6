"""The study viewer: zoom/pan, window/level, pixel readout, lesion mask overlay, cine frames."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from p2p_desktop.gui.imageview import ImagePane

__all__ = ["ViewerPanel", "window_to_levels", "levels_to_window"]


def window_to_levels(center: float, width: float) -> tuple[float, float]:
    """DICOM-style window (center, width) -> display levels (lo, hi)."""
    width = max(float(width), 1e-9)
    return center - width / 2.0, center + width / 2.0


def levels_to_window(lo: float, hi: float) -> tuple[float, float]:
    """Display levels (low, high) as DICOM window (centre, width)."""
    return (lo + hi) / 2.0, hi - lo


class ViewerPanel(QWidget):
    """Shows one :class:`~p2p_desktop.io.Study`; asks for another frame with ``frame_requested``."""

    frame_requested = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.study = None
        self.pane = ImagePane("")
        self.pane.hovered.connect(self._on_hover)

        # window / level, in the study's stored units (0..1 of the display range otherwise)
        self.center_spin = QDoubleSpinBox()
        self.width_spin = QDoubleSpinBox()
        for spin, tip in ((self.center_spin, "Window centre (level), in stored pixel values"),
                          (self.width_spin, "Window width, in stored pixel values")):
            spin.setDecimals(1)
            spin.setRange(-1e6, 1e6)
            spin.setKeyboardTracking(False)
            spin.setToolTip(tip)
            spin.valueChanged.connect(self._on_window_edited)
        self.reset_window_button = QPushButton("Reset")
        self.reset_window_button.setToolTip("Reset window / level: back to the file's window (or the full range)")
        self.reset_window_button.clicked.connect(self.reset_window)
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Fit the whole image to the pane, or double-click it (wheel zooms, drag pans); "
                                   "it stays fitted when the window is resized")
        self.fit_button.clicked.connect(self.pane.fit)
        self.one_to_one_button = QPushButton("1:1")
        self.one_to_one_button.setToolTip("One image pixel per screen pixel")
        self.one_to_one_button.clicked.connect(self.pane.one_to_one)
        self.mask_check = QCheckBox("Lesion mask")
        self.mask_check.setToolTip("Overlay the lesion mask stored next to the image (X_mask.png)")
        self.mask_check.setChecked(True)
        self.mask_check.toggled.connect(self._update_mask)
        self.mask_opacity = QSlider(Qt.Orientation.Horizontal)
        self.mask_opacity.setRange(5, 100)
        self.mask_opacity.setValue(60)
        self.mask_opacity.setMaximumWidth(90)
        self.mask_opacity.setToolTip("Mask opacity")
        self.mask_opacity.valueChanged.connect(self._update_mask)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Level"))
        controls.addWidget(self.center_spin)
        controls.addWidget(QLabel("Width"))
        controls.addWidget(self.width_spin)
        controls.addWidget(self.reset_window_button)
        controls.addSpacing(12)
        controls.addWidget(self.mask_check)
        controls.addWidget(self.mask_opacity)
        controls.addStretch(1)
        controls.addWidget(self.fit_button)
        controls.addWidget(self.one_to_one_button)

        # cine frames
        self.frame_slider = QSlider(Qt.Orientation.Horizontal)
        self.frame_slider.setToolTip("Frame of a multi-frame (cine) study")
        self.frame_spin = QSpinBox()
        self.frame_label = QLabel("Frame")
        self.frame_slider.valueChanged.connect(self.frame_spin.setValue)
        self.frame_spin.valueChanged.connect(self.frame_slider.setValue)
        self.frame_spin.valueChanged.connect(self._schedule_frame)
        self._frame_timer = QTimer(self)
        self._frame_timer.setSingleShot(True)
        self._frame_timer.setInterval(120)
        self._frame_timer.timeout.connect(lambda: self.frame_requested.emit(self.frame_spin.value()))
        self.frame_row = QWidget()
        frames = QHBoxLayout(self.frame_row)
        frames.setContentsMargins(0, 0, 0, 0)
        frames.addWidget(self.frame_label)
        frames.addWidget(self.frame_slider, 1)
        frames.addWidget(self.frame_spin)
        self.frame_row.setVisible(False)

        self.notice = QLabel("")
        self.notice.setObjectName("notice")
        self.notice.setWordWrap(True)
        self.notice.setVisible(False)
        self.warning = QLabel("")  # the input is unlike the classifier's training data
        self.warning.setObjectName("inputWarning")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("background:#fff4e0;color:#7a4a00;border-left:4px solid #e08a00;padding:4px 8px;")
        self.warning.setVisible(False)
        self.readout = QLabel("")
        self.readout.setObjectName("readout")
        self.info_label = QLabel("")
        self.info_label.setObjectName("muted")

        self.message = QLabel("")
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        self.message.setObjectName("placeholder")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.message)
        self.stack.addWidget(self.pane)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(controls)
        layout.addWidget(self.notice)
        layout.addWidget(self.warning)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.frame_row)
        bottom = QHBoxLayout()
        bottom.addWidget(self.readout, 1)
        bottom.addWidget(self.info_label)
        layout.addLayout(bottom)
        self.show_message("No study loaded. Open a DICOM or image file (File ▸ Open) or drop one here.")

    # -- content ----------------------------------------------------------------------------
    def set_notice(self, text: str) -> None:
        """A banner above the image (e.g. which sample is shown); empty hides it."""
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    def set_warning(self, text: str) -> None:
        """A warning banner above the image; empty hides it."""
        self.warning.setText(text)
        self.warning.setVisible(bool(text))

    def show_message(self, text: str) -> None:
        self.study = None
        self.message.setText(text)
        self.stack.setCurrentWidget(self.message)
        self.frame_row.setVisible(False)
        self.readout.setText("")
        self.info_label.setText("")

    def set_study(self, study) -> None:
        same_file = self.study is not None and self.study.path == study.path
        self.study = study
        self.stack.setCurrentWidget(self.pane)
        self.pane.set_title(study.name)
        self.pane.set_image(study.image, levels=(0.0, 1.0), auto_range=not same_file or None)
        lo, hi = study.value_range
        step = max((hi - lo) / 200.0, 0.1)
        for spin in (self.center_spin, self.width_spin):
            spin.setSingleStep(step)
        if not same_file:
            self.reset_window()
        else:
            self._apply_window()
        self._update_mask()
        self.mask_check.setEnabled(study.mask is not None)
        self.mask_opacity.setEnabled(study.mask is not None)
        multi = study.n_frames > 1
        self.frame_row.setVisible(multi)
        if multi:
            for w in (self.frame_slider, self.frame_spin):
                w.blockSignals(True)
                w.setRange(0, study.n_frames - 1)
                w.setValue(study.frame_index)
                w.blockSignals(False)
            self.frame_label.setText(f"Frame (of {study.n_frames})")
        spacing = ""
        if study.pixel_spacing_mm:
            spacing = f" · {study.pixel_spacing_mm[1]:.3f}×{study.pixel_spacing_mm[0]:.3f} mm/px"
        label = f" · class {study.label}" if study.label else ""
        self.info_label.setText(f"{study.width}×{study.height} · {study.channels} ch · "
                                f"{study.bits_stored} bit{spacing}{label}")

    # -- window / level ------------------------------------------------------------------------
    def _stored(self, v: float) -> float:
        lo, hi = self.study.value_range
        return lo + v * (hi - lo)

    def _unit(self, s: float) -> float:
        lo, hi = self.study.value_range
        return (s - lo) / (hi - lo) if hi > lo else s

    def reset_window(self) -> None:
        if self.study is None:
            return
        center, width = self.study.window if self.study.window else (0.5, 1.0)
        lo, hi = self.study.value_range
        scale = hi - lo if hi > lo else 1.0
        for spin, value in ((self.center_spin, self._stored(center)), (self.width_spin, width * scale)):
            spin.blockSignals(True)
            spin.setValue(value)
            spin.blockSignals(False)
        self._apply_window()

    def set_window(self, center: float, width: float) -> None:
        """Set the window in stored units (as the spin boxes show it)."""
        self.center_spin.blockSignals(True)
        self.width_spin.blockSignals(True)
        self.center_spin.setValue(center)
        self.width_spin.setValue(width)
        self.center_spin.blockSignals(False)
        self.width_spin.blockSignals(False)
        self._apply_window()

    def display_levels(self) -> tuple[float, float]:
        """The current display levels in [0, 1] image units."""
        lo_s, hi_s = window_to_levels(self.center_spin.value(), self.width_spin.value())
        return self._unit(lo_s), self._unit(hi_s)

    def _on_window_edited(self, _value: float) -> None:
        if self.study is not None:
            self._apply_window()

    def _apply_window(self) -> None:
        if self.study is None:
            return
        lo, hi = self.display_levels()
        self.pane.set_levels(lo, hi)

    # -- overlays and readout ---------------------------------------------------------------------
    def _update_mask(self, *_args) -> None:
        mask = self.study.mask if self.study is not None else None
        self.pane.set_mask(mask, visible=self.mask_check.isChecked(),
                           opacity=self.mask_opacity.value() / 100.0)

    def _schedule_frame(self, _value: int) -> None:
        if self.study is not None and self.study.n_frames > 1:
            self._frame_timer.start()

    def _on_hover(self, row: int, col: int) -> None:
        study = self.study
        if study is None or row < 0:
            self.readout.setText("")
            return
        value = study.image[row, col]
        if study.stored is not None and study.stored.shape[:2] == study.image.shape[:2]:
            stored = np.asarray(study.stored[row, col]).reshape(-1)
            text = ", ".join(f"{v:g}" for v in stored)
        else:
            text = ", ".join(f"{v:.3f}" for v in np.asarray(value).reshape(-1))
        mask = ""
        if study.mask is not None:
            mask = " · in lesion" if study.mask[row, col] else " · outside lesion"
        self.readout.setText(f"x {col}, y {row}: {text}{mask}")
