"""Readers' answers: validated, saved as new files (never overwritten), merged latest-first.

Each save is one new file ``STUDY/answers/<reader>/NNNNNN.json`` written atomically (the app
saves after every case, an import saves all its rows at once); a later file's answer to a case
replaces an earlier one when answers are loaded, so a changed mind is a new version, and the
old one stays on disk.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from p2p_desktop.errors import InputError

__all__ = ["FINDINGS", "Answer", "AnswerErrors", "parse_answers_csv", "save_answers", "load_answers",
           "reader_folder", "answered_cases", "reader_order"]

FINDINGS = ("benign", "malignant", "normal")
_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0"}
_READER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")


@dataclass
class Answer:
    """One reader's answer to one case. ``altered``: True/False (single design) or "A"/"B" (pair)."""

    case: str
    altered: bool | str
    confidence: int
    finding: str
    birads: int | None = None
    seconds: float | None = None
    time: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AnswerErrors(InputError):
    """Answers that do not fit the study: one line per problem in ``lines``."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def check_reader(name: str) -> str:
    """The reader's name if it is a plain name usable as a folder (letters, digits, space . _ -)."""
    name = str(name).strip()
    if not _READER.match(name) or name in (".", ".."):
        raise InputError(f"reader name {name!r}: use 1-64 letters, digits, spaces, '.', '_' or '-'")
    return name


def parse_altered(text: str, design: str) -> bool | str | None:
    """The ``altered`` answer (yes/no, or A/B in a pair study); None when not valid."""
    t = str(text).strip()
    if design == "pair":
        return t.upper() if t.upper() in ("A", "B") else None
    if t.lower() in _YES:
        return True
    if t.lower() in _NO:
        return False
    return None


def parse_answers_csv(path: str | os.PathLike, study: dict[str, Any]) -> list[Answer]:
    """The answers of one CSV (``case,altered,confidence,finding[,birads]``), every row checked;
    rows left blank (an unfinished template) are skipped. Raises :class:`AnswerErrors` with one
    line per unknown case, duplicate, missing column or out-of-range answer."""
    known = {c["case"] for c in study["cases"]}
    design = study["design"]
    errors: list[str] = []
    answers: list[Answer] = []
    seen: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip().lower() for c in (reader.fieldnames or [])]
            missing = [c for c in ("case", "altered", "confidence", "finding") if c not in cols]
            if missing:
                raise AnswerErrors([f"{path}: missing column(s) {', '.join(missing)}; "
                                    "expected case,altered,confidence,finding[,birads]"])
            for lineno, raw in enumerate(reader, start=2):
                row = {str(k).strip().lower(): str(v or "").strip() for k, v in raw.items() if k is not None}
                case = row.get("case", "")
                if not any(row.get(k) for k in ("altered", "confidence", "finding", "birads")):
                    if case and case not in known:
                        errors.append(f"line {lineno}: unknown case {case!r}")
                    continue  # not answered yet
                if case not in known:
                    errors.append(f"line {lineno}: unknown case {case!r}")
                    continue
                if case in seen:
                    errors.append(f"line {lineno}: case {case} answered twice (first on line {seen[case]})")
                    continue
                seen[case] = lineno
                altered = parse_altered(row.get("altered", ""), design)
                bad = []
                if altered is None:
                    expected = "A or B" if design == "pair" else "yes or no"
                    bad.append(f"altered {row.get('altered')!r} (expected {expected})")
                conf = row.get("confidence", "")
                if not (conf.isdigit() and 1 <= int(conf) <= 5):
                    bad.append(f"confidence {conf!r} (expected 1 to 5)")
                finding = row.get("finding", "").lower()
                if finding not in FINDINGS:
                    bad.append(f"finding {row.get('finding')!r} (expected {', '.join(FINDINGS)})")
                birads = row.get("birads", "")
                if birads and not (birads.isdigit() and 1 <= int(birads) <= 5):
                    bad.append(f"birads {birads!r} (expected 1 to 5 or empty)")
                if bad:
                    errors.append(f"line {lineno}: case {case}: " + "; ".join(bad))
                    continue
                answers.append(Answer(case, altered, int(conf), finding, int(birads) if birads else None))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from None
    if errors:
        raise AnswerErrors(errors)
    if not answers:
        raise AnswerErrors([f"{path}: no answered case"])
    return answers


def reader_folder(study: str | os.PathLike, reader: str) -> Path:
    """The folder of ``reader``'s answer files."""
    return Path(study) / "answers" / check_reader(reader)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9][0-9][0-9][0-9][0-9].json") if p.is_file())


def save_answers(study: str | os.PathLike, reader: str, answers: list[Answer], *, source: str,
                 order: int | None = None) -> Path:
    """Write ``answers`` as the reader's next answers file (atomically, never over another)."""
    from p2p_desktop.io.outputs import atomic_write_bytes

    folder = reader_folder(study, reader)
    folder.mkdir(parents=True, exist_ok=True)
    files = _files(folder)
    nxt = int(files[-1].stem) + 1 if files else 1
    doc = {"reader": reader, "source": source, "order": order,
           "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "answers": [a.to_dict() for a in answers]}
    return atomic_write_bytes(folder / f"{nxt:06d}.json", (json.dumps(doc, indent=1) + "\n").encode("utf-8"))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # never half-written (atomic); unreadable files are skipped


def load_answers(study: str | os.PathLike) -> dict[str, dict[str, Answer]]:
    """``{reader: {case: latest Answer}}`` of every reader of the study."""
    root = Path(study) / "answers"
    out: dict[str, dict[str, Answer]] = {}
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        merged: dict[str, Answer] = {}
        for f in _files(folder):
            doc = _read(f)
            for a in (doc or {}).get("answers", []):
                merged[a["case"]] = Answer(**{k: a.get(k) for k in Answer.__dataclass_fields__})
        if merged:
            out[folder.name] = merged
    return out


def answered_cases(study: str | os.PathLike, reader: str) -> dict[str, Answer]:
    """The cases ``reader`` has answered (latest answers)."""
    return load_answers(study).get(check_reader(reader), {})


def reader_order(study: str | os.PathLike, meta: dict[str, Any], reader: str) -> tuple[int, list[str]]:
    """The reader's slot and case order: the slot of their earlier saves, else the next free one."""
    folder = reader_folder(study, reader)
    for f in _files(folder) if folder.is_dir() else []:
        doc = _read(f)
        if doc and doc.get("order") is not None:
            slot = int(doc["order"]) % len(meta["orders"])
            return slot, list(meta["orders"][slot])
    root = Path(study) / "answers"
    taken = len([p for p in root.iterdir() if p.is_dir() and _files(p)]) if root.is_dir() else 0
    slot = taken % len(meta["orders"])
    return slot, list(meta["orders"][slot])
