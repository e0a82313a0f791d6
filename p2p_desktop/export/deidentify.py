"""De-identification: DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile.

The profile is applied as a data table (:data:`BASIC_PROFILE`, the "Basic Prof." column of
PS3.15 Table E.1-1, tag -> action), to every data set and every sequence item:

- ``X`` remove, ``Z`` empty, ``D`` dummy value (sequences: kept and cleaned item by item),
  ``U`` UID remapped consistently through a :class:`UIDMap` (same old UID -> same new UID);
- ``X/Z``, ``Z/D``, ``X/D``, ``X/Z/D``, ``X/Z/U*``: the first action, unless the derived
  image's IOD (Ultrasound Image or Secondary Capture) makes the attribute Type 2 (then ``Z``)
  or Type 1 (then ``D``) — see :data:`IOD_TYPE2`;
- private attributes removed, overlay and curve groups removed;
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

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BASIC_PROFILE", "IOD_TYPE2", "DEID_METHOD", "UIDMap", "DeidReport", "apply_basic_profile",
           "burned_in_warning", "action_for"]

DEID_METHOD = "DICOM PS3.15 E.1 Basic Profile (p2p-desktop)"  # LO, at most 64 characters

# PS3.15 Table E.1-1, "Basic Prof." column. Tags as GGGGEEEE; "xx" marks repeating groups.
_TABLE = {
    "X": """
        00001000 00081080 00081084 00084000 00102110 00184000 00189424 00380010 00380020 00380021
        001021B0 0040A353 00404035 40000010 0040A078 300A00C3 300A00DD 00101081 0016004D 00181007
        00120082 00120072 00120071 00120051 00400310 00400280 300A02EB 00403001 0008009D 0050001B
        0040051A 00700086 0018A003 00102150 0040A307 00380300 00080025 00080035 0040A07C FFFCFFFC
        0018937F 00082111 00500020 0016004B FFFAFFFA 00380040 4008011A 40080119 300A0016 30100037
        30100036 300A0676 00102160 00404011 300A0196 300A0072 00209158 00181008 00181005 00160070
        00160071 00160072 00160073 00160074 00160075 00160076 00160077 00160078 00160079 0016007A
        0016007B 0016007C 0016007D 0016007E 0016007F 00160080 00160081 00160082 00160083 00160084
        00160085 00160086 00160087 00160088 00160089 0016008A 0016008B 0016008C 0016008D 0016008E
        00404037 00404036 00880200 00204000 00284000 00402400 40080300 00080015 04000600 00080081
        00081040 00081041 00101050 00401011 40080111 4008010C 40080115 40080202 40080102 4008010B
        4008010A 00380011 00380014 00100021 00380061 00380064 001021D0 0016004F 00160050 00160051
        0016004E 00500021 04000404 0016002B 00102000 00101090 00101080 04000550 00203406 00203401
        0018937B 00081060 00401010 04000551 04000552 0040A192 0040A193 00102180 00402010 00402011
        00402008 00402009 04000561 00101000 00101002 00101001 00080024 00080034 0040A07A 00101040
        00101010 00101005 00100032 00380400 00100050 00101060 00100101 00100102 001021F0 00101020
        00102155 00102154 00101030 00104000 00380500 00401004 00400243 00400254 00400250 00404051
        00400251 00400253 00400244 00404050 00400245 00400241 00404030 00400242 00404028 00081050
        00081052 00401102 00401104 00401103 00081048 00081049 00081062 40080114 00181004 001021C0
        00400012 300A000E 30100061 00404052 300C0113 0040100A 00321030 00402001 00401002 00321066
        00321067 04000402 00380004 00101100 00081120 04000403 00080092 00080094 00080096 00102152
        00400275 00321070 00401400 00401001 00401005 00189937 00321032 00321033 00189185 00102299
        00102297 40084000 40080118 40080042 30060028 30060038 30060088 30060085 300A0004 300A0003
        00404034 0038001E 00400006 0040000B 00400007 00400004 00400005 00404008 00400009 00400011
        00404010 00400002 00404005 00400003 00400001 00404027 00400010 00404025 00321020 00321021
        0008103E 00380062 00380060 300A01B2 300A01A6 004006FA 001021A0 300A0216 00380050 0040050A
        00400602 00400600 30060006 30060004 00324000 00081030 00320012 0040A354 40004000 20300020
        00080201 00880910 00880912 00880906 00880904 00185011 300A00B2 0018100A 00181009 0040A352
        0040A358 00384000 00189373 60xx3000 60xx4000 50xxxxxx
    """,
    "Z": """
        00080050 00120060 00120021 00120030 00120031 00120050 3010000F 30100017 0008009C 3010001B
        00402017 3010007F 00400513 00400562 30100043 00100030 00100010 00100040 00100020 00402016
        3010007B 30100081 300A067D 3010005C 00080090 300600A6 30060026 300A0615 300A0611 3010005A
        00400610 30060008 00080020 00200010 00080030 3010007A 0040A088
    """,
    "D": """
        001811BB 00120081 00120020 00120010 00120040 00120042 00400512 0040A730 3010002D 30100035
        30100038 00340002 00340001 00340007 00700001 003A0314 300A0741 300A0742 300A0783 300A0760
        00401101 0040A123 300A0619 300A0623 300A067C 300A073A 300A0002 30100054 300A062A 0018936A
        00340005 00189369 00400551 30060002 300A0608 30100077 300A0736 300A0734 30100033 30100034
        0040A075 0040A073 0040A027 00189371 00189367
    """,
    "U": """
        00209161 30100006 30100013 00181002 04000100 00209164 300A0013 3010006E 00080058 0070031A
        00200052 00080014 00083010 00281214 0018100B 00020003 003A0310 0040A402 0040A171 00281199
        300A0650 00701101 00701102 3010000B 300A0083 3010006F 30100031 30060024 00404023 0040A172
        00081155 00041511 300600C2 00001001 3010003B 0020000E 00080018 30100015 00400554 00880140
        0020000D 00200200 00182042 0040DB0D 0040DB0C 00620021 00081195 300A0609 300A0700 0040A124
    """,
    "X/Z": """
        00400555 00080022 00080032 22000005 22000002 00102203 00081110 00321060 300E0008 30080105
    """,
    "Z/D": "00700084 00080023 00080033 00180010",
    "X/D": """
        00181400 0018700A 00189517 30080054 3010004D 3010004C 30080056 00081072 00181030 300A0006
        300A0007 30100056 00080021 00080031 00189516 30060009 30080250 30080251
    """,
    "X/Z/D": "0008002A 00181000 00080082 00080080 00081070 00081111 00081010",
    "X/Z/U*": "00081140 00082112",
}


def _parse(table: dict[str, str]) -> tuple[dict[int, str], dict[tuple[int, int], str], dict[int, str]]:
    exact: dict[int, str] = {}
    repeating: dict[tuple[int, int], str] = {}  # (group mask value, element) for 60xx / 50xx
    whole_groups: dict[int, str] = {}
    for action, text in table.items():
        for token in text.split():
            if "x" in token:
                if token[4:] == "xxxx":
                    whole_groups[int(token[:2], 16)] = action
                else:
                    repeating[(int(token[:2], 16), int(token[4:], 16))] = action
            else:
                exact[int(token, 16)] = action
    return exact, repeating, whole_groups


#: tag (int) -> action for every non-repeating attribute of the basic profile.
BASIC_PROFILE, _REPEATING, _WHOLE_GROUPS = _parse(_TABLE)

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
    "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0, "UV": 0, "SV": 0,
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
        if tag >> 16 == 0x0002:
            continue  # file meta: rebuilt by the writer
        action = action_for(tag, top_level=top_level)
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
