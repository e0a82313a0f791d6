"""De-identification details that the table-wide test does not see (issue 19, mutation survivors).

The table-wide test (tests/test_deidentify_table.py) checks every action on one module-scoped
data set; these pin the rest of the promises on small data sets of their own: the table parser
on hand-written rows (the module parses its table at import, so only a direct call exercises
it), the exact report counts, VR-specific empty/dummy values, multi-valued UIDs, names outside
the table, the whole overlay range, the de-identification marks and the burned-in warning.
"""

from __future__ import annotations

import json

import pytest
from pydicom.dataset import Dataset

from p2p_desktop.export import deidentify


def test_the_table_parser_on_hand_written_rows():
    doc = {"attributes": [
        {"id": "00100010", "basicProfile": "Z"},
        {"id": "0010ABCD", "basicProfile": "X"},
        {"id": "60xx3000", "basicProfile": "X"},
        {"id": "50xxxxxx", "basicProfile": "X"},
        {"id": "ggggeeee", "basicProfile": "X"},  # private attributes: not a table row
        {"id": "00100033", "basicProfile": "K"},  # the table wins over the supplement
    ]}
    actions = deidentify._actions(doc)
    assert actions["00100010"] == "Z" and actions["0010abcd"] == "X"  # ids lower-cased
    assert not any(k.startswith("gggg") for k in actions)
    assert actions["00100033"] == "K" and actions["00100035"] == "X" and actions["0040a160"] == "D"
    assert len(actions) == 5 + len(deidentify.SUPPLEMENT) - 1
    exact, repeating, whole = deidentify._parse(actions)
    assert exact[0x00100010] == "Z" and exact[0x0010ABCD] == "X" and exact[0x0040A160] == "D"
    assert repeating == {(0x60, 0x3000): "X"}
    assert whole == {0x50: "X"}


def test_the_packaged_table_parses_to_the_module_tables():
    doc = deidentify.load_table()
    assert len(doc["attributes"]) == 621
    rows = {str(r["id"]).lower(): r["basicProfile"] for r in doc["attributes"]}
    exact, repeating, whole = deidentify._parse(deidentify._actions(doc))
    assert exact[0x00100010] == rows["00100010"] and exact[0x0020000D] == "U"
    assert repeating[(0x60, 0x3000)] == rows["60xx3000"] and whole == {0x50: rows["50xxxxxx"]}
    assert exact == deidentify.BASIC_PROFILE and repeating == deidentify._REPEATING
    assert deidentify.load_table(deidentify.TABLE_FILE) == json.loads(deidentify.TABLE_FILE.read_text("utf-8"))


@pytest.mark.parametrize("group", [0x6000, 0x6002, 0x601E])
def test_every_overlay_group_is_removed_whole(group):
    assert deidentify.action_for((group << 16) | 0x0010) == "X"  # Overlay Rows: not itself in the table
    ds = Dataset()
    ds.add_new((group << 16) | 0x0010, "US", 64)
    deidentify.apply_basic_profile(ds)
    assert (group << 16) | 0x0010 not in ds


def test_report_counts_are_exact():
    ds = Dataset()
    ds.OtherPatientIDs = "OTHER-1"  # X
    ds.add_new(0x00210010, "LO", "CREATOR")  # a private block: creator + one element
    ds.add_new(0x00211001, "LO", "secret")
    ds.StudyID = "S1"  # Z (Type 2)
    ds.VerificationDateTime = "20010203040506"  # D
    ds.StudyInstanceUID = "1.2.3.4"  # U
    ds.SeriesInstanceUID = "1.2.3.5"  # U
    report = deidentify.apply_basic_profile(ds)
    assert (report.removed, report.emptied, report.replaced, report.uids, report.private) == (1, 1, 1, 2, 2)


def test_empty_values_keep_their_binary_type():
    ds = Dataset()
    ds.add_new(0x00080050, "OB", b"ACC-1")  # Accession Number (Z) with a binary VR
    deidentify.apply_basic_profile(ds)
    assert ds[0x00080050].value == b"" and isinstance(ds[0x00080050].value, bytes)


def test_dummy_without_a_dummy_for_the_vr_is_empty():
    ds = Dataset()
    ds.add_new(0x0040A030, "OF", b"SECRET!!")  # Verification DateTime (D) with a VR that has no dummy
    ds.add_new(0x0040A027, "LO", "Org")  # Verifying Organization (D): the text dummy
    deidentify.apply_basic_profile(ds)
    assert ds[0x0040A030].value in (b"", "")
    assert ds.VerifyingOrganization == "ANONYMIZED"


def test_multi_valued_uids_are_remapped_each():
    ds = Dataset()
    ds.add_new(0x0020000D, "UI", ["1.2.3.4", "1.2.3.5"])
    ds.SeriesInstanceUID = "1.2.3.5"
    report = deidentify.apply_basic_profile(ds)
    new = list(ds[0x0020000D].value)
    assert len(new) == 2 and new[0] != "1.2.3.4" and new[1] == ds.SeriesInstanceUID != "1.2.3.5"
    assert new[0] == report.uid_map.get("1.2.3.4")


def test_person_names_outside_the_table_get_a_dummy():
    ds = Dataset()
    ds.SecondaryReviewerName = "Doe^Jane"  # PN, not in Table E.1-1
    assert deidentify.action_for(0x00140104) is None
    report = deidentify.apply_basic_profile(ds)
    assert ds.SecondaryReviewerName == "ANONYMIZED" and report.replaced == 1


def test_the_deidentification_marks():
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.BurnedInAnnotation = "NO"
    report = deidentify.apply_basic_profile(ds)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod == deidentify.DEID_METHOD
    assert len(ds.DeidentificationMethodCodeSequence) == 1
    code = ds.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "113100", "DCM", "Basic Application Confidentiality Profile")
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert report.warnings == []  # the header says NO burned-in annotation


@pytest.mark.parametrize("value, state", [("YES", "YES"), (" yes ", "YES"), (None, "absent (unknown)"),
                                          ("", "absent (unknown)"), ("MAYBE", "absent (unknown)")])
def test_burned_in_warning_unless_the_header_says_no(value, state):
    ds = Dataset()
    if value is not None:
        ds.BurnedInAnnotation = value
    warning = deidentify.burned_in_warning(ds)
    assert warning is not None and f"BurnedInAnnotation is {state};" in warning
    assert "the pixel data was NOT cleaned" in warning
    assert deidentify.apply_basic_profile(ds).warnings == [warning]


@pytest.mark.parametrize("value", ["NO", " no ", "No"])
def test_no_burned_in_warning_when_the_header_says_no(value):
    ds = Dataset()
    ds.BurnedInAnnotation = value
    assert deidentify.burned_in_warning(ds) is None
    assert deidentify.burned_in_warning(None) is not None  # no header at all: unknown


def test_every_row_gets_exactly_its_resolved_action_at_both_levels():
    """The table-wide check accepts any option of a combined action; this one demands the one
    the profile resolves to: the first option, except Z for the IOD's Type 2 attributes at the
    top level (on a data set of its own, not the module-scoped one)."""
    from tests import test_deidentify_table as table

    rows = table._rows()
    strict = [(ident, name, action.replace("*", "").split("/")[0]) for ident, name, action in rows]
    ds = Dataset()
    originals = table._fill(ds, rows, "T")
    nested = Dataset()
    nested_originals = table._fill(nested, rows, "N")
    ds.add_new(table.NESTING_SQ, "SQ", [nested])
    report = deidentify.apply_basic_profile(ds)
    problems = table._check(ds, strict, originals, True, report.uid_map)
    problems += table._check(ds[table.NESTING_SQ].value[0], strict, nested_originals, False, report.uid_map)
    assert not problems, "\n".join(problems)
    assert ds.PatientIdentityRemoved == "YES"


def test_groups_beyond_the_overlay_range_follow_the_repeating_rows():
    # 60xx rows apply to every even 60xx group, also past the 6000-601E overlay planes
    for group in (0x6020, 0x6022, 0x60FE):
        assert deidentify.action_for((group << 16) | 0x3000) == "X"  # Overlay Data
        assert deidentify.action_for((group << 16) | 0x4000) == "X"  # Overlay Comments
        assert deidentify.action_for((group << 16) | 0x0010) is None  # not a row
    assert deidentify.action_for(0x50020005) == "X" and deidentify.action_for(0x50FE1234) == "X"  # 50xx whole
    assert deidentify.action_for(0x00191001) == "X" and deidentify.action_for(0x00190010) == "X"  # private
    assert deidentify.action_for(0x00080060) is None  # Modality: kept


def test_more_report_counts_and_value_types():
    ds = Dataset()
    ds.OtherPatientIDs = "OTHER-1"  # X
    ds.add_new(0x00080024, "DA", "20010203")  # X
    ds.StudyID = "S1"  # Z
    ds.AccessionNumber = "A1"  # Z
    ds.add_new(0x00080090, "OW", b"\x01\x02")  # Referring Physician (Z) with a binary VR
    ds.VerificationDateTime = "20010203040506"  # D
    ds.VerifyingOrganization = "Org"  # D
    ds.add_new(0x0020000D, "LO", "1.2.3.4")  # U, stored with a non-UID VR: emptied
    ds.SeriesInstanceUID = "1.2.3.5"  # U, after it: still remapped
    observer = Dataset()
    observer.CodeValue = "K1"
    ds.VerifyingObserverSequence = [observer]  # D sequence: kept, cleaned item by item
    ds.ContentSequence = [Dataset()]  # D sequence
    ds.AnatomicRegionSequence = [Dataset()]  # not in the table: cleaned, not counted
    report = deidentify.apply_basic_profile(ds)
    assert 0x00101000 not in ds and 0x00080024 not in ds
    assert ds.StudyID == "" and isinstance(ds.StudyID, str) and ds.AccessionNumber == ""
    assert ds[0x00080090].value == b""
    assert ds[0x0020000D].value == ""
    assert ds.SeriesInstanceUID == report.uid_map.get("1.2.3.5") != "1.2.3.5"
    assert ds.VerifyingObserverSequence[0].CodeValue == "K1"
    assert (report.removed, report.emptied, report.replaced, report.uids) == (2, 4, 4, 1)


def test_the_burned_in_warning_text():
    ds = Dataset()
    ds.BurnedInAnnotation = "YES"
    assert deidentify.burned_in_warning(ds) == (
        "de-identification: BurnedInAnnotation is YES; ultrasound images often carry burned-in patient "
        "text and the pixel data was NOT cleaned — inspect the image before sharing it")


def test_a_deidentified_study_gets_a_fresh_random_pseudonym_or_the_one_given(ultrasound_file):
    import re

    from p2p_desktop.io import load_study

    study = load_study(ultrasound_file())
    first, second = deidentify.deidentified_study(study), deidentify.deidentified_study(study)
    for s in (first, second):
        assert re.fullmatch(r"deid-[0-9a-f]{16}", s.output_name), s.output_name
        assert s.path == study.path and s.image is study.image  # the study itself is not changed
    assert first.output_name != second.output_name
    assert deidentify.deidentified_study(study, "deid-0123456789abcdef").output_name == "deid-0123456789abcdef"
    assert study.output_name != first.output_name
