"""PACS query/retrieve and sending (DICOM networking through pynetdicom). Qt-free.

See :mod:`p2p_desktop.pacs.nodes` (configured nodes, our AE title) and
:mod:`p2p_desktop.pacs.client` (echo, find, retrieve, send; DIMSE through pynetdicom, DICOMweb
nodes through :mod:`p2p_desktop.pacs.web`).
"""

from p2p_desktop.pacs.client import LEVELS, METHODS, Instance, Timeouts, Transfer, echo, find, retrieve, send
from p2p_desktop.pacs.errors import PacsError
from p2p_desktop.pacs.nodes import (
                                    DEFAULT_AE_TITLE,
                                    DEFAULT_STORAGE_PORT,
                                    Node,
                                    PacsSettings,
                                    TLSFiles,
                                    WebNode,
                                    load_settings,
                                    parse_address,
                                    resolve_node,
                                    save_settings,
                                    settings_path,
)

__all__ = ["PacsError", "Node", "WebNode", "TLSFiles", "PacsSettings", "Timeouts", "Instance", "Transfer", "echo",
           "find", "retrieve", "send", "load_settings", "save_settings", "settings_path", "resolve_node",
           "parse_address", "LEVELS", "METHODS", "DEFAULT_AE_TITLE", "DEFAULT_STORAGE_PORT"]
