"""Import the weights the paper's metrics need onto an offline machine (``models import-weights``).

LPIPS needs torchvision's ImageNet AlexNet and FID the InceptionV3 port of pytorch-fid; neither is
ever downloaded. :func:`import_weights` checks each given file against the **published SHA-256** of
those files (:data:`PUBLISHED`; torchvision and pytorch-fid put its first 8 hex digits in the file
name) and copies it, under its published name, where the metrics look
(``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``). A file whose hash is
none of them is refused (:class:`~p2p_desktop.errors.InputError`, exit 2) with one line naming the
expected and the actual hash, and nothing is copied — all files are checked before any is copied.

On a connected machine, fetch them from:

* https://download.pytorch.org/models/alexnet-owt-7be5be79.pth (LPIPS)
* https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth (FID)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_desktop.errors import InputError

__all__ = ["PublishedWeights", "PUBLISHED", "checkpoints_dir", "import_weights"]


@dataclass(frozen=True)
class PublishedWeights:
    """One published weight file: its name, SHA-256, size, what it enables and where it is published."""

    name: str
    sha256: str
    size: int
    enables: str
    url: str


#: The published files, by name. SHA-256 as published (the name embeds its first 8 hex digits).
PUBLISHED: dict[str, PublishedWeights] = {w.name: w for w in (
    PublishedWeights("alexnet-owt-7be5be79.pth",
                     "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", 244_408_911,
                     "LPIPS (AlexNet): the paper's perceptual metric, and P2P's fidelity=lpips",
                     "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    PublishedWeights("pt_inception-2015-12-05-6726825d.pth",
                     "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2", 95_628_359,
                     "FID (pytorch-fid's InceptionV3, the standard FID network)",
                     "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                     "pt_inception-2015-12-05-6726825d.pth"),
)}


def checkpoints_dir() -> Path:
    """Where the metrics look for their weights: ``torch.hub.get_dir()/checkpoints``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _expected(path: Path, table: Mapping[str, PublishedWeights]) -> str:
    """The hash(es) a file should have: its published name's, else every published one."""
    if path.name in table:
        return f"{table[path.name].sha256} ({path.name})"
    return " or ".join(f"{w.sha256} ({w.name})" for w in table.values())


def import_weights(files: Iterable[str | Path], *,
                   published: Mapping[str, PublishedWeights] | None = None) -> list[dict[str, Any]]:
    """Check each file's SHA-256 against the published weights and copy it where the metrics find it.

    Returns one record per file: ``{"source", "name", "path", "sha256", "enables", "already"}``.
    Raises :class:`InputError` (one line, expected and actual hash) before anything is copied when a
    file is missing or its hash is not a published one. ``published`` replaces :data:`PUBLISHED`
    (tests only: the real weights cannot be shipped with the tests).
    """
    from p2p_desktop.hashing import sha256_file

    table = dict(PUBLISHED if published is None else published)
    by_hash = {w.sha256: w for w in table.values()}
    paths = [Path(f).expanduser() for f in files]
    if not paths:
        raise InputError("import-weights: give at least one file (" + ", ".join(table) + ")")
    checked: list[tuple[Path, PublishedWeights, str]] = []
    for path in paths:
        if not path.is_file():
            raise InputError(f"import-weights: {path} is not a file; nothing was copied")
        actual = sha256_file(path)
        match = by_hash.get(actual)
        if match is None:
            raise InputError(f"import-weights: {path.name} refused: SHA-256 {actual} is not the published hash "
                             f"(expected {_expected(path, table)}); nothing was copied")
        checked.append((path, match, actual))
    folder = checkpoints_dir()
    records = []
    for path, weights, digest in checked:
        target = folder / weights.name
        already = target.is_file() and sha256_file(target) == digest
        if not already:
            folder.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            shutil.copyfile(path, part)
            if sha256_file(part) != digest:  # the copy itself must be the published file
                part.unlink(missing_ok=True)
                raise InputError(f"import-weights: the copy of {path.name} in {folder} does not hash to {digest}")
            os.replace(part, target)
        records.append({"source": str(path), "name": weights.name, "path": str(target), "sha256": digest,
                        "enables": weights.enables, "already": already})
    return records
