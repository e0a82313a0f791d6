"""Parameter forms generated from a config dataclass (:func:`p2p_desktop.config.field_specs`).

One editor per field (check box for bool, list for choices, spin box for bounded int, text
for float/str/optional values), the field's help as tooltip, advanced fields in their own
group. Validation is the config's own: the form builds the ``Config`` and shows the
:class:`~p2p_desktop.errors.InputError` text beside the field it names.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from p2p_desktop.config import FieldSpec, field_specs
from p2p_desktop.errors import InputError

__all__ = ["ConfigForm", "error_field", "wheel_needs_focus"]

INT_LIMIT = 2_000_000_000


def error_field(message: str, names) -> str | None:
    """The field an InputError message names (``"pgd.alpha: …"`` -> ``"alpha"``), if any."""
    head, sep, _ = message.partition(":")
    if not sep:
        return None
    name = head.strip().rsplit(".", 1)[-1]
    return name if name in names else None


class _WheelNeedsFocus(QObject):
    """Passes a wheel event over an unfocused editor on to its parent (the panel scrolls) instead
    of letting it change the value under the pointer."""

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.Wheel and not obj.hasFocus():
            event.ignore()  # not accepted: Qt offers it to the parent, the scroll area
            return True
        return False


def wheel_needs_focus(*widgets) -> None:
    """Spin boxes and combo boxes take the mouse wheel only once focused (click or Tab), so
    scrolling a panel over them never changes a value (their focus policy is StrongFocus)."""
    for w in widgets:
        if isinstance(w, (QAbstractSpinBox, QComboBox)) and w.property("wheelNeedsFocus") is not True:
            w.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            w.installEventFilter(_WheelNeedsFocus(w))
            w.setProperty("wheelNeedsFocus", True)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class _Row:
    """One field: its spec, editor and error label."""

    def __init__(self, spec: FieldSpec) -> None:
        self.spec = spec
        self.editor = self._make_editor(spec)
        wheel_needs_focus(self.editor)
        tip = spec.help or spec.label
        bounds = []
        if spec.min is not None:
            bounds.append(f"{'>' if spec.min_exclusive else '≥'} {spec.min:g}")
        if spec.max is not None:
            bounds.append(f"≤ {spec.max:g}")
        if bounds:
            tip += f"  ({', '.join(bounds)})"
        if spec.optional:
            tip += "  (optional: leave empty for none)"
        self.editor.setToolTip(tip)
        self.error = QLabel("")
        self.error.setObjectName("fieldError")
        self.error.setWordWrap(True)
        self.error.setVisible(False)
        self.container = QWidget()
        box = QVBoxLayout(self.container)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(1)
        box.addWidget(self.editor)
        box.addWidget(self.error)

    @staticmethod
    def _make_editor(spec: FieldSpec):
        if spec.choices:
            combo = QComboBox()
            if spec.optional:
                combo.addItem("(none)", None)
            for choice in spec.choices:
                combo.addItem(str(choice), choice)
            return combo
        if spec.type is bool and not spec.optional:
            return QCheckBox()
        if spec.type is int and not spec.optional:
            spin = QSpinBox()
            lo = int(spec.min) + (1 if spec.min_exclusive else 0) if spec.min is not None else -INT_LIMIT
            hi = int(spec.max) if spec.max is not None else INT_LIMIT
            spin.setRange(lo, hi)
            spin.setKeyboardTracking(True)
            return spin
        edit = QLineEdit()
        if spec.optional:
            edit.setPlaceholderText("none")
        return edit

    def value(self) -> Any:
        e = self.editor
        if isinstance(e, QComboBox):
            return e.currentData()
        if isinstance(e, QCheckBox):
            return e.isChecked()
        if isinstance(e, QSpinBox):
            return e.value()
        text = e.text().strip()
        if text == "" and self.spec.optional:
            return None
        return text

    def set_value(self, value: Any) -> None:
        e = self.editor
        if isinstance(e, QComboBox):
            index = e.findData(value)
            if index < 0:
                index = e.findText(str(value))
            e.setCurrentIndex(max(index, 0))
        elif isinstance(e, QCheckBox):
            e.setChecked(bool(value))
        elif isinstance(e, QSpinBox):
            e.setValue(int(value))
        else:
            e.setText(_format(value))

    def connect(self, slot) -> None:
        e = self.editor
        if isinstance(e, QComboBox):
            e.currentIndexChanged.connect(slot)
        elif isinstance(e, QCheckBox):
            e.toggled.connect(slot)
        elif isinstance(e, QSpinBox):
            e.valueChanged.connect(slot)
        else:
            e.textChanged.connect(slot)

    def set_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))
        self.editor.setProperty("invalid", bool(text))
        self.editor.style().unpolish(self.editor)
        self.editor.style().polish(self.editor)


class ConfigForm(QWidget):
    """Editors for the fields of a config class; ``changed`` after every edit.

    ``exclude`` names fields shown elsewhere (the attack panel has its own seed and target).
    """

    changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.config_cls = None
        self.rows: dict[str, _Row] = {}
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._basic = QFormLayout()
        self._advanced_box = QGroupBox("Advanced")
        self._advanced_box.setCheckable(True)
        self._advanced_box.setChecked(False)
        self._advanced = QFormLayout(self._advanced_box)
        self._advanced_box.toggled.connect(self._show_advanced)
        self._layout.addLayout(self._basic)
        self._layout.addWidget(self._advanced_box)
        self.general_error = QLabel("")
        self.general_error.setObjectName("fieldError")
        self.general_error.setWordWrap(True)
        self.general_error.setVisible(False)
        self._layout.addWidget(self.general_error)
        self._advanced_box.setVisible(False)

    def build(self, config_cls, exclude: tuple[str, ...] = ()) -> None:
        """Replace the editors with those of ``config_cls`` (defaults filled in)."""
        for form in (self._basic, self._advanced):
            while form.rowCount():
                form.removeRow(0)
        self.rows.clear()
        self.config_cls = config_cls
        has_advanced = False
        for spec in field_specs(config_cls):
            if spec.name in exclude:
                continue
            row = _Row(spec)
            row.set_value(spec.default)
            row.connect(self._on_edit)
            label = QLabel(spec.label[:1].upper() + spec.label[1:])
            label.setToolTip(spec.help)
            (self._advanced if spec.advanced else self._basic).addRow(label, row.container)
            if not spec.advanced:  # widgets added to a shown parent are shown only later otherwise
                label.show()
                row.container.show()
            has_advanced |= spec.advanced
            self.rows[spec.name] = row
        self._advanced_box.setVisible(has_advanced)
        self._show_advanced(self._advanced_box.isChecked())
        self.clear_errors()

    def _show_advanced(self, on: bool) -> None:
        for i in range(self._advanced.rowCount()):
            for role in (QFormLayout.ItemRole.LabelRole, QFormLayout.ItemRole.FieldRole):
                item = self._advanced.itemAt(i, role)
                if item is not None and item.widget() is not None:
                    item.widget().setVisible(on)

    def _on_edit(self, *_args) -> None:
        self.changed.emit()

    # -- values ------------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        return {name: row.value() for name, row in self.rows.items()}

    def set_values(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            if name in self.rows:
                row = self.rows[name]
                row.editor.blockSignals(True)
                row.set_value(value)
                row.editor.blockSignals(False)
        self.changed.emit()

    def reset(self) -> None:
        self.set_values({name: row.spec.default for name, row in self.rows.items()})

    # -- validation -------------------------------------------------------------------------
    def clear_errors(self) -> None:
        for row in self.rows.values():
            row.set_error("")
        self.general_error.setVisible(False)

    def show_error(self, message: str) -> str | None:
        """Show an InputError text beside its field (or below the form); returns the field."""
        self.clear_errors()
        name = error_field(message, self.rows)
        if name is not None:
            self.rows[name].set_error(message.partition(":")[2].strip())
            if self.rows[name].spec.advanced:
                self._advanced_box.setChecked(True)
        else:
            self.general_error.setText(message)
            self.general_error.setVisible(True)
        return name

    def build_config(self, **extra: Any):
        """The validated config (raises InputError, which is also shown beside its field)."""
        if self.config_cls is None:
            raise InputError("no attack selected")
        try:
            cfg = self.config_cls.from_dict({**self.values(), **extra})
        except InputError as exc:
            self.show_error(str(exc))
            raise
        self.clear_errors()
        return cfg
