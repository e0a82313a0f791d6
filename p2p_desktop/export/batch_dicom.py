"""Derived DICOMs of a batch evaluation (``p2p-desktop evaluate --export-dicom [--deidentify]``).

:func:`p2p_desktop.jobs.evaluate.evaluate` takes a :class:`BatchDicomExport` and calls it at three
points: :meth:`~BatchDicomExport.settings` goes into the run's settings (so a run is resumed
only with the same export settings), :meth:`~BatchDicomExport.export` after each *successful*
attack (the failures are not adversarial examples; they get no DICOM, as they get no PNG), and
:meth:`~BatchDicomExport.finish` at the end, which lists the files (with SHA-256) for
``summary.json``, the returned outputs and the audit record.

Each file is written by :func:`p2p_desktop.export.dicom.export_dicom` (the code behind
``attack --export-dicom``) through an :class:`~p2p_desktop.io.outputs.OutputSet` (one atomic
write, never into the dataset folder), at a path that is a function of the job only:

- ``dicom/<classifier>/<attack>/<image path>.dcm`` (the dataset's layout, as ``adversarial/``);
- de-identified: ``dicom/<classifier>/<attack>/deid-<16 hex>.dcm``, the hex being a keyed digest
  (HMAC-SHA256 under the installation's audit key) of the output folder and the job, so the
  name says nothing about the source to anyone without that key.

Resume-safe: a job already in ``per_image.csv`` is not run again, and a job whose DICOM exists
already (written just before an interruption, before its row) is not exported a second time:
an existing file is complete, since it is linked into place only once fully written.

The CLI side (:func:`check_send`, :func:`send_exports`): with ``--send-dicom NODE`` the node is
resolved and C-ECHOed before any work (one line and exit 2 when it cannot be reached), and the
exported instances are C-STOREd at the end through :mod:`p2p_desktop.pacs` (which appends the
``pacs-send`` audit record).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DICOM_DIR", "BatchDicomExport"]

DICOM_DIR = "dicom"


def _safe(name: str) -> str:
    from p2p_desktop.io.outputs import safe_name

    return safe_name(name)


class BatchDicomExport:
    """Derived DICOMs of the successful jobs of one evaluation (see the module docstring)."""

    def __init__(self, *, deidentify: bool = False) -> None:
        self.deidentify = bool(deidentify)
        self.exported = 0  # files written by this call
        self.notes: list[str] = []

    def settings(self) -> dict[str, Any]:
        """Part of the evaluation's settings fingerprint."""
        return {"deidentify": self.deidentify}

    def path(self, out: Path, classifier: str, attack: str, image: str) -> Path:
        """Where the derived DICOM of one job is (or will be) written."""
        folder = Path(out) / DICOM_DIR / _safe(classifier) / _safe(attack)
        if self.deidentify:
            return folder / f"{self._pseudonym(out, classifier, attack, image)}.dcm"
        rel = Path(image)
        name = rel.name if rel.suffix.lower() == ".dcm" else rel.name + ".dcm"
        return folder / rel.parent / name

    @staticmethod
    def _pseudonym(out: Path, classifier: str, attack: str, image: str) -> str:
        from p2p_desktop.audit import keyed_digest

        job = "\0".join((str(Path(out).resolve()), classifier, attack, image))
        return "deid-" + keyed_digest(job, purpose="evaluate-dicom-name")[:16]

    def export(self, out: Path, result, study, classifier: str, attack: str, image: str, dataset: Path) -> None:
        """Write the derived DICOM of one successful job, unless it exists already."""
        from p2p_desktop.export.dicom import export_dicom
        from p2p_desktop.io.outputs import OutputSet

        target = self.path(out, classifier, attack, image)
        if target.is_file():
            return  # written before an interruption: complete (linked into place whole), not written twice
        if self.deidentify:
            from p2p_desktop.export.deidentify import deidentified_study

            study = deidentified_study(study, target.stem)
        notes_before = len(result.notes)
        with OutputSet(target.parent, [dataset]) as outs:
            written = export_dicom(result, study, outs, deidentify=self.deidentify, name=target.name)
        if Path(written) != target:  # another process took the name meanwhile: keep one file per job
            Path(written).unlink(missing_ok=True)
        self.exported += 1
        for note in result.notes[notes_before:]:
            if note not in self.notes:
                self.notes.append(note)

    def finish(self, out: Path, rows: Sequence[dict[str, Any]], notes: list[str]) -> list[dict[str, str]]:
        """``{kind: "dicom", path, sha256}`` of every successful job's DICOM (earlier sessions'
        too); adds the export's notes (once each) to ``notes``."""
        from p2p_desktop.hashing import sha256_file

        records, missing = [], 0
        for r in rows:
            if r.get("success") is not True:
                continue
            path = self.path(out, r["classifier"], r["attack"], r["image"])
            if path.is_file():
                records.append({"kind": "dicom", "path": str(path), "sha256": sha256_file(path)})
            else:
                missing += 1
        what = "de-identified derived DICOM" if self.deidentify else "derived DICOM"
        notes.append(f"DICOM export: {len(records)} {what}(s) of the successful attacks in "
                     f"{Path(out) / DICOM_DIR} ({self.exported} written by this run)")
        if missing:
            notes.append(f"DICOM export: {missing} successful attack(s) have no DICOM (finished by an earlier run "
                         "that did not export them)")
        notes.extend(n for n in self.notes if n not in notes)
        return records
