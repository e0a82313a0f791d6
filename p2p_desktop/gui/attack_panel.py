"""The attack panel: attack, preset, classifier, backbone, device, target, seed, parameters, Run.

Attacks come from :func:`p2p_desktop.attacks.registry.available` (plugins included); each
attack's parameter form is generated from its config dataclass. Classifiers are the
registered ones (:func:`p2p_desktop.models.registry.names`) plus model cards the user added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from p2p_desktop.config import Config
from p2p_desktop.errors import InputError
from p2p_desktop.gui.forms import ConfigForm, wheel_needs_focus

__all__ = ["AttackPanel", "DEFAULT_CLASSIFIER", "DEFAULT_BACKBONE", "classifier_classes", "classifier_card"]

DEFAULT_CLASSIFIER = "demo-squeezenet1_1"
DEFAULT_BACKBONE = "demo"
DEVICES = ("auto", "cpu", "cuda", "mps")
COMMON_FIELDS = ("seed", "target")
PRESET_FIELD = "preset"
#: The Preset item shown while the parameters differ from the chosen preset (or the defaults).
CUSTOM = "(custom)"
_CUSTOM_DATA = "\0custom"


@dataclass(frozen=True)
class _EmptyConfig(Config):
    """Stand-in form when the selected attack cannot be loaded."""


def classifier_card(spec: str):
    """The classifier's model card (weights not loaded), or None when it cannot be read."""
    from p2p_desktop.models import registry
    from p2p_desktop.models.classifier import ModelCard

    try:
        entry = registry.find(spec)
        if entry is not None and isinstance(entry.card, dict):
            return ModelCard.from_dict(entry.card)
        path = Path(spec)
        card = path / "card.json" if path.is_dir() else path
        if card.suffix.lower() == ".json" and card.is_file():
            return ModelCard.from_dict(json.loads(card.read_text(encoding="utf-8")))
    except Exception:  # noqa: BLE001 - only used for advice; the run reports real errors
        return None
    return None


def classifier_classes(spec: str) -> tuple[str, ...]:
    """Class names of a classifier from its card, without loading weights (empty if unknown)."""
    from p2p_desktop.models import registry

    entry = registry.find(spec)
    if entry is not None:
        classes = entry.card.get("classes") if isinstance(entry.card, dict) else None
        return tuple(str(c) for c in classes or ())
    path = Path(spec)
    card = path / "card.json" if path.is_dir() else path
    if card.suffix.lower() == ".json" and card.is_file():
        try:
            return tuple(str(c) for c in json.loads(card.read_text(encoding="utf-8")).get("classes", ()))
        except (OSError, ValueError, AttributeError):
            return ()
    return ()


class AttackPanel(QWidget):
    """Everything that defines a run; ``run_requested``/``cancel_requested`` for the buttons."""

    run_requested = Signal()
    cancel_requested = Signal()
    changed = Signal()

    def __init__(self, settings=None, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.attack_cls = None
        self._attack_error = ""
        self._running = False
        self._valid = False
        self._blocked = ""  # why Run cannot act on the selection (e.g. an unreadable file)

        self.attack_combo = QComboBox()
        self.attack_combo.setToolTip("Attack method (built-in and plugins)")
        self.summary = QLabel("")
        self.summary.setObjectName("muted")
        self.summary.setWordWrap(True)
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip("Parameter presets the attack defines (e.g. the paper's settings)")

        self.classifier_combo = QComboBox()
        self.classifier_combo.setToolTip("The classifier under attack: a registered model or a model card")
        self.classifier_combo.setMinimumContentsLength(14)
        self.classifier_button = QToolButton()
        self.classifier_button.setText("…")
        self.classifier_button.setToolTip("Add a classifier model card (.json, or a folder with card.json)")
        self.backbone_combo = QComboBox()
        self.backbone_combo.setToolTip("Latent diffusion backbone ('demo' or a local diffusers folder); "
                                       "only attacks that need one use it")
        self.backbone_button = QToolButton()
        self.backbone_button.setText("…")
        self.backbone_button.setToolTip("Add a local diffusers Stable Diffusion folder")
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setToolTip("Compute device: auto picks CUDA, then MPS, then CPU")
        self.target_combo = QComboBox()
        self.target_combo.setToolTip("Targeted attack: the class the image should be taken for. "
                                     "Untargeted: any wrong class")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2_147_483_647)
        self.seed_spin.setToolTip("Random seed: same seed + same device gives the same output")
        self.run_error = QLabel("")
        self.run_error.setObjectName("fieldError")
        self.run_error.setWordWrap(True)
        self.run_error.setVisible(False)

        self.form = ConfigForm()
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("primary")
        self.run_button.setToolTip("Run the attack on the selected study (Ctrl+R)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job (it stops within one iteration)")
        self.cancel_button.setEnabled(False)

        def with_button(combo, button):
            row = QHBoxLayout()
            row.setContentsMargins(0, 0, 0, 0)
            row.addWidget(combo, 1)
            row.addWidget(button)
            w = QWidget()
            w.setLayout(row)
            return w

        method = QGroupBox("Attack")
        mform = QFormLayout(method)
        mform.addRow("Method", self.attack_combo)
        mform.addRow("", self.summary)
        mform.addRow("Preset", self.preset_combo)
        models = QGroupBox("Models")
        modform = QFormLayout(models)
        modform.addRow("Classifier", with_button(self.classifier_combo, self.classifier_button))
        self.backbone_row = with_button(self.backbone_combo, self.backbone_button)
        modform.addRow("Backbone", self.backbone_row)
        self._models_form = modform
        modform.addRow("Device", self.device_combo)
        goal = QGroupBox("Goal")
        gform = QFormLayout(goal)
        gform.addRow("Target", self.target_combo)
        gform.addRow("Seed", self.seed_spin)
        self.params_box = QGroupBox("Parameters")
        pbox = QVBoxLayout(self.params_box)
        pbox.addWidget(self.form)

        # The choices scroll; Run and Cancel stay pinned below them, so they are reachable
        # however small the screen (a 1280 x 800 laptop) or the dock.
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 2)
        buttons.addWidget(self.cancel_button, 1)
        content = QWidget()
        inner = QVBoxLayout(content)
        inner.setContentsMargins(0, 0, 0, 0)
        for box in (method, models, goal, self.params_box):
            inner.addWidget(box)
        inner.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.scroll, 1)
        layout.addWidget(self.run_error)
        layout.addLayout(buttons)

        self.attack_combo.currentIndexChanged.connect(self._on_attack_changed)
        self.preset_combo.currentIndexChanged.connect(self._on_preset_changed)
        self.classifier_combo.currentIndexChanged.connect(self._on_classifier_changed)
        self.classifier_button.clicked.connect(self.browse_classifier)
        self.backbone_button.clicked.connect(self.browse_backbone)
        self.device_combo.currentIndexChanged.connect(self._on_changed)
        self.target_combo.currentIndexChanged.connect(self._on_changed)
        self.seed_spin.valueChanged.connect(self._on_changed)
        self.form.changed.connect(self._on_changed)
        self.run_button.clicked.connect(self.run_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)

        wheel_needs_focus(self.attack_combo, self.preset_combo, self.classifier_combo, self.backbone_combo,
                          self.device_combo, self.target_combo, self.seed_spin)
        self._base_preset: str | None = None  # the preset whose values the form was last given

        self._restoring = True  # no settings are written while the saved choices are restored
        if settings is not None:
            self.set_device(settings.device)
        self.refresh_models()
        self.refresh_attacks()
        self._restoring = False
        self.validate()

    # -- population ------------------------------------------------------------------------
    def refresh_attacks(self, select: str | None = None) -> None:
        """(Re)list the registered attacks; keeps the current one when possible."""
        from p2p_desktop.attacks.registry import available

        current = select or self.attack_name() or (self.settings.attack if self.settings else "") or "fgsm"
        self.attack_combo.blockSignals(True)
        self.attack_combo.clear()
        for spec in available():
            label = spec.name if spec.source == "builtin" else f"{spec.name}  (plugin)"
            self.attack_combo.addItem(label, spec.name)
            self.attack_combo.setItemData(self.attack_combo.count() - 1, spec.summary, Qt.ItemDataRole.ToolTipRole)
        index = self.attack_combo.findData(current)
        self.attack_combo.setCurrentIndex(index if index >= 0 else 0)
        self.attack_combo.blockSignals(False)
        self._on_attack_changed()

    def refresh_models(self) -> None:
        """(Re)list classifiers and backbones: registered ones, then those the user added."""
        from p2p_desktop.models import registry

        current = self.classifier_spec() or (self.settings.classifier if self.settings else "")
        names = registry.names("classifier")
        extra = [p for p in (self.settings.model_paths if self.settings else []) if p not in names]
        self.classifier_combo.blockSignals(True)
        self.classifier_combo.clear()
        for name in names:
            self.classifier_combo.addItem(name, name)
        for path in extra:
            self.classifier_combo.addItem(Path(path).name, path)
            self.classifier_combo.setItemData(self.classifier_combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        if self.classifier_combo.count() == 0:
            self.classifier_combo.setPlaceholderText("no classifier: add a model card with …")
        choice = next((c for c in (current, DEFAULT_CLASSIFIER) if c and self.classifier_combo.findData(c) >= 0),
                      None)
        self.classifier_combo.setCurrentIndex(self.classifier_combo.findData(choice) if choice else
                                              (0 if self.classifier_combo.count() else -1))
        self.classifier_combo.blockSignals(False)

        current_bb = self.backbone_spec() or (self.settings.backbone if self.settings else "") or DEFAULT_BACKBONE
        backbones = [DEFAULT_BACKBONE] + [n for n in registry.names("backbone") if n != DEFAULT_BACKBONE]
        backbones += [p for p in (self.settings.backbone_paths if self.settings else []) if p not in backbones]
        self.backbone_combo.blockSignals(True)
        self.backbone_combo.clear()
        for b in backbones:
            self.backbone_combo.addItem(Path(b).name if ("/" in b or "\\" in b) else b, b)
            self.backbone_combo.setItemData(self.backbone_combo.count() - 1, b, Qt.ItemDataRole.ToolTipRole)
        index = self.backbone_combo.findData(current_bb)
        self.backbone_combo.setCurrentIndex(index if index >= 0 else 0)
        self.backbone_combo.blockSignals(False)
        self._on_classifier_changed()

    def browse_classifier(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Classifier model card", "",
                                              "Model card (*.json);;All files (*)")
        if path:
            self.add_classifier(path)

    def add_classifier(self, path: str) -> None:
        if self.settings is not None:
            self.settings.add_model_path(path)
        if self.classifier_combo.findData(path) < 0:
            self.classifier_combo.addItem(Path(path).name, path)
        self.classifier_combo.setCurrentIndex(self.classifier_combo.findData(path))

    def browse_backbone(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Diffusers Stable Diffusion folder")
        if path:
            self.add_backbone(path)

    def add_backbone(self, path: str) -> None:
        if self.settings is not None:
            self.settings.add_backbone_path(path)
        if self.backbone_combo.findData(path) < 0:
            self.backbone_combo.addItem(Path(path).name, path)
        self.backbone_combo.setCurrentIndex(self.backbone_combo.findData(path))

    # -- current values -------------------------------------------------------------------------
    def attack_name(self) -> str:
        return self.attack_combo.currentData() or ""

    def classifier_spec(self) -> str:
        return self.classifier_combo.currentData() or ""

    def backbone_spec(self) -> str:
        return self.backbone_combo.currentData() or ""

    def device(self) -> str:
        return self.device_combo.currentText()

    def target(self) -> str | None:
        return self.target_combo.currentData()

    def preset(self) -> str | None:
        """The preset chosen last (None: the defaults), also while "(custom)" shows that the
        parameters have been changed since."""
        return self._base_preset

    def set_attack(self, name: str) -> bool:
        index = self.attack_combo.findData(name)
        if index < 0:
            return False
        self.attack_combo.setCurrentIndex(index)
        return True

    def set_classifier(self, spec: str) -> bool:
        index = self.classifier_combo.findData(spec)
        if index < 0:
            return False
        self.classifier_combo.setCurrentIndex(index)
        return True

    def set_device(self, device: str) -> None:
        index = self.device_combo.findText(device)
        self.device_combo.setCurrentIndex(index if index >= 0 else 0)

    def set_params(self, **values) -> None:
        """Set parameter fields by name (the seed too); unknown names raise InputError."""
        if "seed" in values:
            self.seed_spin.setValue(int(values.pop("seed")))
        unknown = sorted(set(values) - set(self.form.rows))
        if unknown:
            raise InputError(f"{self.attack_name()}: unknown parameter(s) {', '.join(unknown)}")
        self.form.set_values(values)

    # -- reactions ---------------------------------------------------------------------------------
    def _on_attack_changed(self, *_args) -> None:
        from p2p_desktop.attacks.registry import get, spec

        name = self.attack_name()
        self.attack_cls, self._attack_error = None, ""
        self._base_preset = None
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        self.preset_combo.addItem("(defaults)", None)
        if name:
            try:
                self.summary.setText(spec(name).summary)  # the class's summary (a plugin's manifest until imported)
                self.attack_cls = get(name)
            except InputError as exc:
                self._attack_error = str(exc)
        if self.attack_cls is not None:
            for preset in getattr(self.attack_cls, "presets", {}) or {}:
                self.preset_combo.addItem(preset, preset)
            # a config field named "preset" records the preset: set from the one Preset combo
            self.form.build(self.attack_cls.Config, exclude=COMMON_FIELDS + (PRESET_FIELD,))
            self.summary.setText(spec(name).summary)
            self.params_box.setVisible(bool(self.form.rows))
        else:
            self.form.build(_EmptyConfig)
            self.params_box.setVisible(False)
        self.preset_combo.setEnabled(self.preset_combo.count() > 1)
        self.preset_combo.blockSignals(False)
        if self.settings is not None and name and not self._restoring:
            self.settings.attack = name
        self._update_backbone_state()
        self._on_changed()

    def _on_preset_changed(self, *_args) -> None:
        if self.attack_cls is None or self.preset_combo.currentData() == _CUSTOM_DATA:
            return
        preset = self._base_preset = self.preset_combo.currentData()
        values = {n: r.spec.default for n, r in self.form.rows.items()}
        if preset:
            values.update({k: v for k, v in self.attack_cls.presets[preset].items() if k in self.form.rows})
            if "seed" in self.attack_cls.presets[preset]:
                self.seed_spin.setValue(int(self.attack_cls.presets[preset]["seed"]))
        self.form.set_values(values)

    def _on_classifier_changed(self, *_args) -> None:
        spec = self.classifier_spec()
        current_target = self.target()
        self.target_combo.blockSignals(True)
        self.target_combo.clear()
        self.target_combo.addItem("untargeted (any wrong class)", None)
        for cls in classifier_classes(spec) if spec else ():
            self.target_combo.addItem(cls, cls)
        index = self.target_combo.findData(current_target)
        self.target_combo.setCurrentIndex(index if index >= 0 else 0)
        self.target_combo.blockSignals(False)
        if self.settings is not None and spec and not self._restoring:
            self.settings.classifier = spec
        self._on_changed()

    def _update_backbone_state(self) -> None:
        needs = bool(getattr(self.attack_cls, "requires_backbone", False))  # read from the class
        for w in (self.backbone_combo, self.backbone_button):
            w.setEnabled(needs and not self._running)
        self._models_form.setRowVisible(self.backbone_row, needs)  # FGSM/PGD: no backbone row
        tip = ("Latent diffusion backbone used by this attack" if needs
               else "This attack does not use a diffusion backbone")
        self.backbone_combo.setToolTip(tip)

    def _on_changed(self, *_args) -> None:
        if self.settings is not None and not getattr(self, "_restoring", False):
            self.settings.device = self.device()
            if self.backbone_spec():
                self.settings.backbone = self.backbone_spec()
        self._show_preset()
        self.validate()
        self.changed.emit()

    # -- validation and building --------------------------------------------------------------------
    def validate(self) -> bool:
        """Check the current choices; shows the reason and disables Run when invalid."""
        message = ""
        if self._attack_error:
            message = self._attack_error
        elif self.attack_cls is None:
            message = "no attack available"
        else:
            try:
                self.form.build_config(**self._common())  # shows its message beside the field
            except InputError:
                self._set_valid(False, "")
                return False
            if not self.classifier_spec():
                message = ("no classifier available: put the demo models in resources/models, "
                           "or add a model card with the … button")
        self._set_valid(not message, message)
        return not message

    def _set_valid(self, valid: bool, message: str) -> None:
        self._valid = valid
        shown = message or (self._blocked if valid else "")
        self.run_error.setText(shown)
        self.run_error.setVisible(bool(shown))
        self.run_button.setEnabled(valid and not self._blocked and not self._running)
        self.run_button.setToolTip(self._blocked or "Run the attack on the selected study (Ctrl+R)")

    def set_blocked(self, reason: str) -> None:
        """Disable Run with ``reason`` shown (nothing runnable is selected); "" enables it again."""
        self._blocked = reason
        self._set_valid(self._valid, "" if self._valid else self.run_error.text())

    @property
    def blocked_reason(self) -> str:
        return self._blocked

    def _common(self) -> dict:
        common = {"seed": self.seed_spin.value(), "target": self.target()}
        if self.attack_cls is not None and PRESET_FIELD in getattr(self.attack_cls.Config, "__dataclass_fields__", {}):
            common[PRESET_FIELD] = self._preset_label(common)
        return common

    def _preset_label(self, common: dict) -> str:
        """What the config's ``preset`` field records: the chosen preset while the form holds
        its values, else ``custom``."""
        field = self.attack_cls.Config.__dataclass_fields__[PRESET_FIELD]
        chosen = self.preset() or field.default
        return chosen if self._holds_preset(common) else "custom"

    def _holds_preset(self, common: dict | None = None) -> bool:
        """Whether the parameters are still those of the chosen preset (or of the defaults):
        the config they build equals the preset's, seed and target aside (they have their own
        fields)."""
        cls = self.attack_cls
        fields = cls.Config.__dataclass_fields__
        common = {"seed": self.seed_spin.value(), "target": self.target()} if common is None else common
        common = {k: v for k, v in common.items() if k != PRESET_FIELD}
        chosen = self.preset() or (fields[PRESET_FIELD].default if PRESET_FIELD in fields else None)
        try:
            base = cls.from_preset(chosen if chosen in (cls.presets or {}) else None).config.to_dict()
            values = {**base, **common, **self.form.values()}
            if PRESET_FIELD in fields:
                values[PRESET_FIELD] = chosen
            return cls.Config.from_dict(values).to_dict() == {**base, **common}
        except (InputError, ValueError, TypeError):
            return False

    def _show_preset(self) -> None:
        """Preset shows "(custom)" once a parameter differs from the chosen preset (or the
        defaults), and the preset again when its values are back."""
        if self.attack_cls is None:
            return
        combo = self.preset_combo
        custom = combo.findData(_CUSTOM_DATA)
        combo.blockSignals(True)
        if self._holds_preset():
            if custom >= 0:
                combo.removeItem(custom)
            combo.setCurrentIndex(max(combo.findData(self._base_preset), 0))
        else:
            if custom < 0:
                combo.addItem(CUSTOM, _CUSTOM_DATA)
                combo.setItemData(combo.count() - 1, "The parameters differ from the chosen preset; choose a "
                                  "preset to load its values again", Qt.ItemDataRole.ToolTipRole)
                custom = combo.count() - 1
            combo.setCurrentIndex(custom)
        combo.blockSignals(False)
        combo.setEnabled(not self._running and combo.count() > 1)

    def build_attack(self):
        """The attack instance for a run (raises InputError with the message shown beside the field)."""
        if not self.validate():
            raise InputError(self.run_error.text() or self.form.general_error.text()
                             or next((r.error.text() for r in self.form.rows.values() if r.error.text()),
                                     "invalid parameters"))
        config = self.form.build_config(**self._common())
        return self.attack_cls(config)

    def set_running(self, running: bool) -> None:
        """Lock the form while a job runs; Cancel is enabled only then."""
        self._running = running
        for w in (self.attack_combo, self.preset_combo, self.classifier_combo, self.classifier_button,
                  self.device_combo, self.target_combo, self.seed_spin, self.form):
            w.setEnabled(not running)
        self.preset_combo.setEnabled(not running and self.preset_combo.count() > 1)
        self._update_backbone_state()
        self.cancel_button.setEnabled(running)
        self.run_button.setEnabled(self._valid and not self._blocked and not running)
