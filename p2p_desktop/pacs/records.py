"""What the PACS clients (DIMSE in :mod:`.client`, DICOMweb in :mod:`.web`) both record: the
transferred instances, identifier values as JSON, and the UID syntax check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["UID", "Instance", "json_value"]

#: A DICOM UID: dot-separated digit groups (PS3.5 9.1; the 64-character limit is checked by callers).
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass
class Instance:
    """One transferred instance and how it went (``success``, ``warning`` or ``failed: ...``)."""

    sop_instance_uid: str
    sop_class_uid: str = ""
    status: str = "success"
    path: str | None = None


def json_value(value: Any) -> Any:
    """A C-FIND/QIDO identifier value as JSON: None for empty, lists for multi-values, else str or number."""
    from pydicom.multival import MultiValue

    if value is None or value == "":
        return None
    if isinstance(value, MultiValue) or isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (int, float)):
        return value
    return str(value)
