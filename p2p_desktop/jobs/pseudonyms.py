"""The optional local map from the pseudonym of de-identified outputs to their source
(``--pseudonym-map FILE``). Without it, nothing links them. The pseudonyms themselves are made
by :func:`p2p_desktop.export.deidentify.deidentified_study`, for every surface."""

from __future__ import annotations

import json

from p2p_desktop.export.deidentify import deidentified_study, pseudonym

__all__ = ["pseudonym", "deidentified_study", "check_pseudonym_map", "record_pseudonym"]


def check_pseudonym_map(path) -> None:
    """Refuse early (InputError) when the pseudonym map cannot be appended to."""
    import os
    from pathlib import Path

    from p2p_desktop.errors import InputError

    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"--pseudonym-map {p}: is a folder; give a file (e.g. pseudonyms.jsonl)")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"--pseudonym-map {p}: folder {folder} does not exist")
    if (p.exists() and not os.access(p, os.W_OK)) or not os.access(folder, os.W_OK):
        raise InputError(f"--pseudonym-map {p}: not writable")


def record_pseudonym(path, name: str, study, input_sha256: str) -> None:
    """Append ``{pseudonym, input, input_sha256, frame, created}`` as one JSON line to the local
    mapping file (created readable by its owner only). Only when the user asks for one."""
    import datetime as _dt
    import os
    from pathlib import Path

    from p2p_desktop.errors import OutputError

    p = Path(path).expanduser()
    line = json.dumps({"pseudonym": name, "input": str(Path(study.path).resolve()), "input_sha256": input_sha256,
                       "frame": int(getattr(study, "frame_index", 0)),
                       "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        raise OutputError(f"cannot append to the pseudonym map {p}: {exc.strerror or exc}") from None
