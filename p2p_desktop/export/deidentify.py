"""De-identification: DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile.

The profile is applied as a data table (:data:`BASIC_PROFILE`, the "Basic Prof." column of
PS3.15 Table E.1-1, tag -> action) to every data set and, recursively, every sequence item.
The table is the data file ``confidentiality_profile.json`` next to this module: all of
Table E.1-1 as published in a maintained, named listing (the innolitics "dicom-standard"
repository; the file records the source URL, commit and DICOM edition), plus
:data:`SUPPLEMENT`, the few identifying attributes the listing lacks. Actions:

- ``X`` remove, ``Z`` empty, ``D`` dummy value (sequences: kept and cleaned item by item),
  ``U`` UID remapped consistently through a :class:`UIDMap` (same old UID -> same new UID);
- ``X/Z``, ``Z/D``, ``X/D``, ``X/Z/D``, ``X/Z/U*``: the first action, unless the derived
  image's IOD (Ultrasound Image or Secondary Capture) makes the attribute Type 2 (then ``Z``)
  or Type 1 (then ``D``) — see :data:`IOD_TYPE2`;
- private attributes removed, overlay and curve groups removed;
- free text inside structured content (Text Value, in Content Sequence items) replaced by a
  dummy; Person Name (PN) values outside the table replaced by a dummy as well;
- Patient Identity Removed (0012,0062) = YES, De-identification Method (0012,0063) and its
  code sequence (0012,0064) = DCM 113100 "Basic Application Confidentiality Profile",
  Longitudinal Temporal Information Modified (0028,0303) = REMOVED.

Why a table and not a library: ``deid`` (pydicom/deid) ships a recipe of keyword patterns
(``REMOVE contains:UID``, ``REMOVE endswith:ID``...) rather than the Annex E actions — it
removes Type 1/2 attributes (SOP Instance UID, Patient ID) and cannot remap UIDs
consistently without custom functions; ``dicognito`` replaces values with random fakes and
shifts dates, keeps private tags and does not fill (0012,0064). Both would need as much code
to bend into the basic profile as the table itself.

Pixel data is never cleaned: ultrasound often carries burned-in text, so
:func:`burned_in_warning` returns a warning whenever BurnedInAnnotation is YES or unknown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TABLE", "TABLE_FILE", "SUPPLEMENT", "load_table", "BASIC_PROFILE", "IOD_TYPE2", "DEID_METHOD",
           "UIDMap", "DeidReport", "apply_basic_profile",
           "burned_in_warning", "action_for", "pseudonym", "deidentified_study"]

DEID_METHOD = "DICOM PS3.15 E.1 Basic Profile (p2p-desktop)"  # LO, at most 64 characters

#: The data file with PS3.15 Table E.1-1 (every attribute of the confidentiality profile with its
#: basic-profile action and option columns), generated from a maintained listing that names its
#: source and DICOM edition (``scripts/update_confidentiality_profile.py``).
TABLE_FILE = Path(__file__).with_name("confidentiality_profile.json")

#: Attributes that identify as much as ones in the table but are missing from the listing:
#: ``{tag: (name, action, why)}``. They are applied exactly like table rows.
SUPPLEMENT: dict[str, tuple[str, str, str]] = {
    "00100033": ("Patient's Birth Date in Alternative Calendar", "X", "the birth date, in another calendar"),
    "00100034": ("Patient's Death Date in Alternative Calendar", "X", "a date of the patient"),
    "00100035": ("Patient's Alternative Calendar", "X", "goes with the two dates above"),
    "0040a160": ("Text Value", "D", "free text of structured content (Content Sequence items): the Clean "
                                    "Structured Content option marks it; the basic profile keeps no free text"),
}


def load_table(path: Path = TABLE_FILE) -> dict[str, Any]:
    """The data file as a dict: ``source``, ``source_commit``, ``dicom_edition``, ``attributes``."""
    return json.loads(path.read_text(encoding="utf-8"))


def _actions(doc: dict[str, Any]) -> dict[str, str]:
    """``{id: basic-profile action}`` of the table plus :data:`SUPPLEMENT` (id as in the listing:
    ``gggg eeee`` hex, ``xx`` for repeating groups)."""
    out: dict[str, str] = {}
    for row in doc["attributes"]:
        ident = str(row["id"]).lower()
        if ident.startswith("gggg"):
            continue  # private attributes: handled by their odd group below
        out[ident] = str(row["basicProfile"])
    for ident, (_name, action, _why) in SUPPLEMENT.items():
        out.setdefault(ident, action)
    return out


def _parse(actions: dict[str, str]) -> tuple[dict[int, str], dict[tuple[int, int], str], dict[int, str]]:
    exact: dict[int, str] = {}
    repeating: dict[tuple[int, int], str] = {}  # (group high byte, element) for 60xx / 50xx
    whole_groups: dict[int, str] = {}
    for token, action in actions.items():
        if "x" in token:
            if token[4:] == "xxxx":
                whole_groups[int(token[:2], 16)] = action
            else:
                repeating[(int(token[:2], 16), int(token[4:], 16))] = action
        else:
            exact[int(token, 16)] = action
    return exact, repeating, whole_groups


TABLE = load_table()
#: tag (int) -> action for every non-repeating attribute of the basic profile (table + supplement).
BASIC_PROFILE, _REPEATING, _WHOLE_GROUPS = _parse(_actions(TABLE))

#: Attributes of the basic profile that are Type 2 (or 2C) in the derived image's IOD
#: (Patient, General Study, General Series, General Image modules): an ``X/Z`` or ``Z/D``
#: action keeps them present and empty.
IOD_TYPE2 = frozenset({
    0x00100010, 0x00100020, 0x00100030, 0x00100040,  # patient name, ID, birth date, sex
    0x00080020, 0x00080030, 0x00080090, 0x00200010, 0x00080050,  # study date/time, referring, ID, accession
    0x00080023, 0x00080033,  # content date / time (2C)
})
#: Type 1 attributes of the derived image's IOD that the profile touches (none today).
IOD_TYPE1: frozenset[int] = frozenset()

_DUMMY_TEXT = "ANONYMIZED"
_DUMMIES: dict[str, Any] = {
    "PN": "ANONYMIZED", "LO": _DUMMY_TEXT, "SH": _DUMMY_TEXT, "LT": _DUMMY_TEXT, "ST": _DUMMY_TEXT,
    "UT": _DUMMY_TEXT, "UC": _DUMMY_TEXT, "CS": _DUMMY_TEXT, "AE": _DUMMY_TEXT, "DA": "19000101",
    "TM": "000000", "DT": "19000101000000", "AS": "000Y", "IS": "0", "DS": "0", "US": 0, "SS": 0,
    "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0, "UV": 0, "SV": 0, "UR": _DUMMY_TEXT, "AT": 0,
    "OB": b"\0\0", "OW": b"\0\0", "UN": b"\0\0",
}


def action_for(tag: int, *, top_level: bool = True) -> str | None:
    """The resolved basic-profile action (X, Z, D, U or K=None) for one attribute."""
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1:
        return "X"  # private attributes
    if 0x6000 <= group <= 0x601E:
        return "X"  # the whole overlay plane (its Overlay Data is X, the rest would dangle)
    action = BASIC_PROFILE.get(tag)
    if action is None:
        for (hi, elem), act in _REPEATING.items():
            if group >> 8 == hi and element == elem and group & 1 == 0:
                action = act
                break
    if action is None and group >> 8 in _WHOLE_GROUPS:
        action = _WHOLE_GROUPS[group >> 8]
    if action is None:
        return None
    if "/" in action:
        options = action.replace("*", "").split("/")
        if top_level and tag in IOD_TYPE1 and "D" in options:
            return "D"
        if top_level and tag in IOD_TYPE2 and "Z" in options:
            return "Z"
        return options[0]
    return action


class UIDMap:
    """Consistent UID replacement: the same original UID always gets the same new UID."""

    def __init__(self) -> None:
        self._map: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        from pydicom.uid import generate_uid

        uid = str(uid).strip()
        if not uid:
            return uid
        if uid not in self._map:
            self._map[uid] = generate_uid()
        return self._map[uid]

    def get(self, uid: str) -> str | None:
        return self._map.get(str(uid).strip())

    def items(self):
        return self._map.items()


@dataclass
class DeidReport:
    """What :func:`apply_basic_profile` did: counts per action and the UID map."""

    removed: int = 0
    emptied: int = 0
    replaced: int = 0
    uids: int = 0
    private: int = 0
    uid_map: UIDMap = field(default_factory=UIDMap)
    warnings: list[str] = field(default_factory=list)


def _dummy(elem) -> Any:
    return _DUMMIES.get(elem.VR, None)


def _clean(ds, report: DeidReport, top_level: bool) -> None:
    from pydicom.multival import MultiValue

    for elem in list(ds):
        tag = int(elem.tag)
        action = action_for(tag, top_level=top_level)
        if action is None and elem.VR == "PN":
            action = "D"  # a person's name outside the table (e.g. inside an unlisted sequence item)
        if elem.VR == "SQ" and action in (None, "D"):
            for item in elem.value or []:
                _clean(item, report, top_level=False)
            if action == "D":
                report.replaced += 1
            continue
        if action is None:
            continue
        if action == "X":
            del ds[elem.tag]
            if (tag >> 16) % 2 == 0:
                report.removed += 1
        elif action == "Z":
            elem.value = [] if elem.VR == "SQ" else (b"" if elem.VR in ("OB", "OW", "UN") else "")
            report.emptied += 1
        elif action == "D":
            dummy = _dummy(elem)
            if elem.VR == "UI":
                dummy = None  # never a dummy UID: remap instead
                action = "U"
            else:
                elem.value = dummy if dummy is not None else ""
                report.replaced += 1
        if action == "U":
            if elem.VR != "UI":
                elem.value = ""
                report.emptied += 1
                continue
            value = elem.value
            if isinstance(value, (list, tuple, MultiValue)):
                elem.value = [report.uid_map(v) for v in value]
            elif value:
                elem.value = report.uid_map(value)
            report.uids += 1


def apply_basic_profile(ds, uid_map: UIDMap | None = None) -> DeidReport:
    """De-identify ``ds`` in place (see the module docstring); returns a :class:`DeidReport`."""
    from pydicom.dataset import Dataset

    report = DeidReport(uid_map=uid_map or UIDMap())
    before_private = sum(1 for e in ds.iterall() if e.tag.is_private)
    _clean(ds, report, top_level=True)
    ds.remove_private_tags()  # private attributes nested in kept sequences
    report.private = before_private
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEID_METHOD
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [code]
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    warning = burned_in_warning(ds)
    if warning:
        report.warnings.append(warning)
    return report


def burned_in_warning(ds: Any) -> str | None:
    """A warning unless the header states BurnedInAnnotation NO (pixels are never cleaned)."""
    value = str(getattr(ds, "BurnedInAnnotation", "") or "").strip().upper() if ds is not None else ""
    if value == "NO":
        return None
    state = "YES" if value == "YES" else "absent (unknown)"
    return (f"de-identification: BurnedInAnnotation is {state}; ultrasound images often carry "
            "burned-in patient text and the pixel data was NOT cleaned — inspect the image before "
            "sharing it")


# -- names of de-identified outputs ---------------------------------------------------------------
def pseudonym() -> str:
    """A fresh random name stem for de-identified outputs (not derived from the source)."""
    import secrets

    return f"deid-{secrets.token_hex(8)}"


def deidentified_study(study, name: str | None = None):
    """The study with a pseudonymous output name (a new random one unless ``name`` is given):
    the one way de-identified outputs are named (CLI, GUI, batch DICOMs); the study is not changed."""
    import dataclasses

    return dataclasses.replace(study, output_name=name or pseudonym())
