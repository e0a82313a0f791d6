"""Image panes on pyqtgraph: zoom/pan, levels, overlays, hover position, linked views."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QImage, QPixmap

import pyqtgraph as pg

__all__ = ["ImagePane", "mask_rgba", "to_display", "thumbnail_array", "array_to_pixmap", "colormap"]

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

VIEW_BACKGROUND = "#1e2126"
LABEL_COLOUR = "#d8dce3"


def to_display(image: np.ndarray) -> np.ndarray:
    """(H, W, 1) -> (H, W); (H, W, 3) unchanged (pyqtgraph draws both)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[:, :, 0]
    return arr


def mask_rgba(mask: np.ndarray, colour: tuple[int, int, int] = (255, 64, 64), alpha: int = 110) -> np.ndarray:
    """A bool (H, W) mask as an RGBA uint8 overlay: colour inside, transparent outside."""
    m = np.asarray(mask, dtype=bool)
    out = np.zeros(m.shape + (4,), np.uint8)
    out[m] = (*colour, alpha)
    return out


def thumbnail_array(image: np.ndarray, size: int = 64) -> np.ndarray:
    """(H, W, C) float [0,1] -> (h, w, 3) uint8 with the longer side ``size`` (nearest sampling)."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w = arr.shape[:2]
    scale = size / max(h, w)
    rows = np.clip((np.arange(max(1, round(h * scale))) / scale).astype(int), 0, h - 1)
    cols = np.clip((np.arange(max(1, round(w * scale))) / scale).astype(int), 0, w - 1)
    small = arr[rows][:, cols]
    if small.shape[2] == 1:
        small = np.repeat(small, 3, axis=2)
    return np.ascontiguousarray(np.round(np.clip(small[:, :, :3], 0, 1) * 255).astype(np.uint8))


def array_to_pixmap(rgb: np.ndarray) -> QPixmap:
    """(h, w, 3) uint8 -> QPixmap (copied, so the array may go)."""
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    qimg = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimg.copy())


def colormap(mode: str) -> pg.ColorMap:
    """Diverging blue-white-red centred on 0 for signed maps; inferno for magnitudes."""
    return pg.colormap.get("CET-D1" if mode == "signed" else "inferno")


class _TitleLabel(pg.LabelItem):
    """A pane title that never widens its pane (a long title is cut, the image keeps its room)."""

    def updateMin(self) -> None:  # noqa: N802 - pyqtgraph API
        super().updateMin()
        self.setMinimumWidth(0)
        hint = getattr(self, "_sizeHint", None)
        if isinstance(hint, dict) and Qt.SizeHint.MinimumSize in hint:
            hint[Qt.SizeHint.MinimumSize] = (0, hint[Qt.SizeHint.MinimumSize][1])


class ImagePane(pg.GraphicsLayoutWidget):
    """One image in a zoomable, pannable view (wheel zooms, drag pans, aspect locked).

    The image is fitted to the pane and refitted whenever the pane changes size, until the user
    zooms or pans (napari's canvas and Slicer's slice views do the same); double-click, the
    context menu's Fit or :meth:`fit` fit it again, :meth:`one_to_one` shows it at 1 image pixel
    per screen pixel. ``hovered(row, col)`` reports the pixel under the mouse (-1, -1 outside).
    """

    hovered = Signal(int, int)
    fitted = True
    _shape: tuple[int, int] | None = None
    _links: list = []

    def __init__(self, title: str = "", parent=None) -> None:
        super().__init__(parent=parent)
        self._links = []
        self.setBackground(VIEW_BACKGROUND)
        self.ci.setContentsMargins(2, 2, 2, 2)
        self.title_label = _TitleLabel(title, color=LABEL_COLOUR, size="9pt")
        self.addItem(self.title_label, row=0, col=0, colspan=2)
        self.view: pg.ViewBox = self.addViewBox(row=1, col=0, lockAspect=True, invertY=True,
                                                enableMenu=False)
        self.view.setDefaultPadding(0.01)
        self.base_item = pg.ImageItem()  # an image under the main one (heatmap overlays)
        self.base_item.setVisible(False)
        self.image_item = pg.ImageItem()
        self.overlay_item = pg.ImageItem()  # the lesion mask
        self.overlay_item.setVisible(False)
        self.overlay_item.setZValue(10)
        for item in (self.base_item, self.image_item, self.overlay_item):
            self.view.addItem(item)
        self._shape = None
        self.fitted = True  # refit on resize until the user zooms or pans
        self.view.sigRangeChangedManually.connect(self._on_manual_range)
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.setMinimumSize(120, 120)
        from PySide6.QtGui import QAction

        self.fit_action = QAction("Fit to pane (double-click)", self)
        self.fit_action.triggered.connect(lambda _c=False: self.fit())
        self.one_to_one_action = QAction("1:1 (one image pixel per screen pixel)", self)
        self.one_to_one_action.triggered.connect(lambda _c=False: self.one_to_one())
        self.addActions([self.fit_action, self.one_to_one_action])
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)

    # -- content ----------------------------------------------------------------------------
    def set_title(self, text: str) -> None:
        self.title_label.setText(text, color=LABEL_COLOUR, size="9pt")

    @property
    def image_shape(self) -> tuple[int, int] | None:
        return self._shape

    def set_image(self, image: np.ndarray, levels: tuple[float, float] | None = (0.0, 1.0),
                  auto_range: bool | None = None) -> None:
        arr = to_display(image)
        new_shape = tuple(arr.shape[:2])
        if auto_range is None:
            auto_range = new_shape != self._shape
        self._shape = new_shape  # type: ignore[assignment]
        if levels is None:
            self.image_item.setImage(arr, autoLevels=True)
        else:
            self.image_item.setImage(arr, autoLevels=False, levels=levels)
        if auto_range:
            self.fit()

    def set_base(self, image: np.ndarray | None, levels=(0.0, 1.0)) -> None:
        if image is None:
            self.base_item.clear()
            self.base_item.setVisible(False)
            return
        self.base_item.setImage(to_display(image), autoLevels=False, levels=levels)
        self.base_item.setVisible(True)

    def set_levels(self, lo: float, hi: float) -> None:
        if hi <= lo:
            hi = lo + 1e-6
        self.image_item.setLevels((lo, hi))

    def set_mask(self, mask: np.ndarray | None, visible: bool = True, opacity: float = 1.0) -> None:
        if mask is None:
            self.overlay_item.clear()
            self.overlay_item.setVisible(False)
            return
        self.overlay_item.setImage(mask_rgba(mask), autoLevels=False, levels=(0, 255))
        self.overlay_item.setOpacity(opacity)
        self.overlay_item.setVisible(visible)

    def clear(self) -> None:
        for item in (self.base_item, self.image_item, self.overlay_item):
            item.clear()
        self.base_item.setVisible(False)
        self.overlay_item.setVisible(False)
        self._shape = None

    # -- view ---------------------------------------------------------------------------------
    def fit(self) -> None:
        """The whole image, as large as the pane allows (linked panes follow)."""
        for pane in self._linked():
            pane.fitted = True
        if self._shape is not None:
            h, w = self._shape
            self.view.setRange(xRange=(0, w), yRange=(0, h), padding=0.01)

    def one_to_one(self) -> None:
        """One image pixel per screen pixel, about the current centre (linked panes follow)."""
        if self._shape is None:
            return
        for pane in self._linked():
            pane.fitted = False
        rect = self.view.sceneBoundingRect()
        ratio = self.devicePixelRatioF() or 1.0
        vw, vh = rect.width() * ratio, rect.height() * ratio
        (x0, x1), (y0, y1) = self.view.viewRange()
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        self.view.setRange(xRange=(cx - vw / 2, cx + vw / 2), yRange=(cy - vh / 2, cy + vh / 2), padding=0)

    def drawn_size(self) -> tuple[float, float]:
        """The image's visible size on screen, in device pixels (from the ViewBox mapping)."""
        if self._shape is None:
            return 0.0, 0.0
        from PySide6.QtCore import QRectF

        h, w = self._shape
        rect = self.view.mapViewToScene(QRectF(0, 0, w, h)).boundingRect()
        seen = rect.intersected(self.view.sceneBoundingRect())
        ratio = self.devicePixelRatioF() or 1.0
        return seen.width() * ratio, seen.height() * ratio

    def _linked(self) -> list[ImagePane]:
        panes = [self]
        for other in getattr(self, "_links", ()):
            if other not in panes:
                panes.append(other)
        return panes

    def _on_manual_range(self, *_args) -> None:
        for pane in self._linked():
            pane.fitted = False

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().mouseDoubleClickEvent(event)
        if event.button() == Qt.MouseButton.LeftButton:
            self.fit()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if self.fitted and self._shape is not None:
            h, w = self._shape
            # (its own range only: each linked pane refits itself when it is resized)
            self.view.setRange(xRange=(0, w), yRange=(0, h), padding=0.01)

    def link(self, other: ImagePane) -> None:
        """Share zoom and pan with ``other`` (and its Fit / 1:1 state)."""
        self.view.setXLink(other.view)
        self.view.setYLink(other.view)
        group = {id(p): p for p in (*self._linked(), *other._linked())}
        for pane in group.values():
            pane._links = [p for p in group.values() if p is not pane]

    def unlink(self) -> None:
        self.view.setXLink(None)
        self.view.setYLink(None)
        for other in getattr(self, "_links", ()):
            other._links = [p for p in other._links if p is not self]
        self._links = []

    def _on_mouse_moved(self, pos: QPointF) -> None:
        if self._shape is None or not self.view.sceneBoundingRect().contains(pos):
            self.hovered.emit(-1, -1)
            return
        p = self.view.mapSceneToView(pos)
        col, row = int(np.floor(p.x())), int(np.floor(p.y()))
        h, w = self._shape
        if 0 <= row < h and 0 <= col < w:
            self.hovered.emit(row, col)
        else:
            self.hovered.emit(-1, -1)
