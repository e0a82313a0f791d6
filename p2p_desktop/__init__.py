"""p2p-desktop: adversarial robustness of breast-ultrasound classifiers.

The core (everything outside ``p2p_desktop.gui``) never imports Qt.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
