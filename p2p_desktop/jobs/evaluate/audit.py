"""The audit record of a batch evaluation: one ``evaluate`` record per call that got past its
checks — finished, cancelled or failed — through :class:`p2p_desktop.audit.AuditLog`.

The record names the settings and their fingerprint, the classifiers and the backbone, the
counts, and every output with its SHA-256. A run that de-identifies its exports
(``--export-dicom --deidentify``) names no dataset: ``dataset`` is null and
``dataset_keyed_digest`` is a digest of its path under the installation's audit key, and the
reason a run stopped (an error message may name an image) is withheld.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["record_evaluation"]


def record_evaluation(plan, outputs: Iterable[dict[str, str]] = (), *, status: str = "finished",
                      counts: dict[str, int] | None = None, reason: str = "", command: str = "evaluate",
                      log: str | os.PathLike | None = None) -> dict[str, Any]:
    """Append the ``evaluate`` record of ``plan`` (a :class:`~p2p_desktop.jobs.evaluate.params.Plan`)
    and return it. ``status``: finished, cancelled or failed (then ``reason`` says why);
    ``counts``: attacked, resumed, done and total jobs; ``outputs``: ``{kind, path, sha256}``."""
    from p2p_desktop.audit import AuditLog, keyed_digest, outputs_summary

    config = plan.config
    data: dict[str, Any] = {
        "command": command, "status": status,
        "dataset": None if plan.deidentified else str(plan.root),
        "out": str(plan.out),
        "attacks": plan.attack_names, "classifiers": plan.classifier_names,
        "backbone": config.get("backbone"),
        "config": config, "fingerprint": plan.fingerprint,
        **{k: int(v) for k, v in (counts or {}).items()},
        "deidentified": plan.deidentified,
        "outputs": outputs_summary(outputs),
    }
    if plan.deidentified:
        data["dataset_keyed_digest"] = keyed_digest(str(Path(plan.root).resolve()), purpose="evaluate-dataset")
    if reason:  # an error message may name an image: withheld when the run de-identifies
        data["reason"] = f"{status} (the message is withheld: the run de-identifies)" if plan.deidentified \
            else reason
    return AuditLog(log).append("evaluate", data)
