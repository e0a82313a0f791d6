#!/usr/bin/env python
"""Model packs: a registered model folder shipped separately from the program, with its hashes.

A pack is ``<name>.zip`` holding ``<name>/card.json``, the model's files and
``<name>/SHA256SUMS`` (``sha256sum`` format, every other file of the pack), plus a
``<name>.zip.sha256`` beside it. Packs are byte-reproducible (sorted entries, fixed
timestamps), so the same folder always gives the same zip and the same published hash.

    python packaging/make_model_pack.py pack resources/models/demo-resnet34 --out packs/
    python packaging/make_model_pack.py check packs/demo-resnet34.zip
    python packaging/make_model_pack.py install packs/demo-resnet34.zip --models-dir <bundle>/_internal/resources/models

``pack`` refuses a folder whose files do not match its card (the card's SHA-256s are what
``p2p-desktop models verify`` checks after installation). ``install`` checks the zip against
its SHA256SUMS, refuses absolute or ``..`` member paths, unpacks into a temporary folder
beside the target and moves it into place only when every hash matched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

__all__ = ["PackError", "pack_model", "check_pack", "install_pack", "folder_sums", "main"]

SUMS = "SHA256SUMS"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints"}
_MAX_MEMBER = 16 << 30  # 16 GiB: no single model file is larger


class PackError(Exception):
    """A pack cannot be made, checked or installed; the message says which file and why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts) \
                and rel.as_posix() != SUMS and p.suffix not in (".pyc", ".tmp", ".partial"):
            out.append(p)
    return out


def folder_sums(folder: str | Path) -> dict[str, str]:
    """{relative posix path: sha256} for every file of a model folder."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): _sha256(p) for p in _files(folder)}


def _card_files(folder: Path) -> dict[str, str | None]:
    """Files the card names with their expected SHA-256 (same rules as the model registry)."""
    card_path = folder / "card.json"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackError(f"{folder} has no card.json: not a registered model folder") from None
    except (OSError, ValueError) as exc:
        raise PackError(f"{card_path}: unreadable card ({exc})") from None
    if isinstance(card.get("files"), dict) and card["files"]:
        return {str(k): (str(v) if v else None) for k, v in card["files"].items()}
    if card.get("weights"):
        return {str(card["weights"]): card.get("sha256")}
    raise PackError(f"{card_path}: the card names no files (neither 'weights' nor 'files')")


def _sums_text(sums: dict[str, str]) -> str:
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(sums.items()))


def _parse_sums(text: str) -> dict[str, str]:
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        rel = rel.lstrip("*")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not rel:
            raise PackError(f"{SUMS} line {n} is not '<sha256>  <path>': {line[:80]!r}")
        out[rel] = digest
    return out


def pack_model(folder: str | Path, out_dir: str | Path) -> Path:
    """Zip a model folder (checked against its card) with SHA256SUMS; return the zip's path."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise PackError(f"{folder} is not a folder")
    name = folder.name
    sums = folder_sums(folder)
    for rel, digest in _card_files(folder).items():
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            raise PackError(f"card.json names {rel!r}, which lies outside the model folder")
        if rel not in sums:
            raise PackError(f"{name}: {rel} is named on the card but missing")
        if digest and sums[rel] != digest:
            raise PackError(f"{name}: {rel} does not match the SHA-256 on its card (corrupted or retrained "
                            f"without updating the card); refusing to pack it")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.zip"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".zip.partial", dir=out_dir)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            entries = [(rel, folder / rel) for rel in sorted(sums)]
            for rel, path in entries:
                info = zipfile.ZipInfo(f"{name}/{rel}", date_time=_EPOCH)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            info = zipfile.ZipInfo(f"{name}/{SUMS}", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, _sums_text(sums), compress_type=zipfile.ZIP_DEFLATED)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    (out_dir / f"{target.name}.sha256").write_text(f"{_sha256(target)}  {target.name}\n", encoding="utf-8")
    return target


def _members(zf: zipfile.ZipFile) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    """The pack's top folder and {relative path: member}; refuses unsafe member names."""
    tops, members = set(), {}
    for info in zf.infolist():
        if info.is_dir():
            continue
        p = PurePosixPath(info.filename)
        if p.is_absolute() or ".." in p.parts or "\\" in info.filename or len(p.parts) < 2 or ":" in p.parts[0]:
            raise PackError(f"unsafe member path {info.filename!r}: packs hold one folder of relative paths")
        if info.file_size > _MAX_MEMBER:
            raise PackError(f"member {info.filename!r} is {info.file_size} bytes: larger than any model file")
        tops.add(p.parts[0])
        members[PurePosixPath(*p.parts[1:]).as_posix()] = info
    if len(tops) != 1:
        raise PackError(f"a pack holds exactly one model folder, found {sorted(tops) or 'none'}")
    return tops.pop(), members


def check_pack(zip_path: str | Path) -> dict[str, str]:
    """Check every member of a pack against its SHA256SUMS; return {path: sha256}."""
    zip_path = Path(zip_path)
    side = zip_path.with_name(zip_path.name + ".sha256")
    if side.is_file():
        expected = side.read_text(encoding="utf-8").split()[0]
        if _sha256(zip_path) != expected:
            raise PackError(f"{zip_path.name}: SHA-256 does not match {side.name} (damaged download?)")
    try:
        zf = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PackError(f"{zip_path}: not a readable zip ({exc})") from None
    with zf:
        top, members = _members(zf)
        if SUMS not in members:
            raise PackError(f"{zip_path.name}: no {top}/{SUMS} in the pack")
        sums = _parse_sums(zf.read(members[SUMS]).decode("utf-8"))
        listed, present = set(sums), set(members) - {SUMS}
        if present - listed:
            raise PackError(f"{zip_path.name}: files not covered by {SUMS}: {sorted(present - listed)}")
        if listed - present:
            raise PackError(f"{zip_path.name}: files listed in {SUMS} but missing: {sorted(listed - present)}")
        for rel, digest in sums.items():
            h = hashlib.sha256()
            with zf.open(members[rel]) as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            if h.hexdigest() != digest:
                raise PackError(f"{zip_path.name}: {top}/{rel} does not match its SHA-256 in {SUMS}")
    return sums


def install_pack(zip_path: str | Path, models_dir: str | Path, *, force: bool = False) -> Path:
    """Check a pack and unpack it as ``models_dir/<name>``; return that folder."""
    zip_path, models_dir = Path(zip_path), Path(models_dir)
    sums = check_pack(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        top, members = _members(zf)
        target = models_dir / top
        if target.exists() and not force:
            raise PackError(f"{target} already exists (use --force to replace it)")
        models_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{top}-", dir=models_dir))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; an installed model is readable like its siblings
        try:
            for rel, info in members.items():
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            got = folder_sums(tmp)
            if got != sums:
                raise PackError(f"{zip_path.name}: unpacked files differ from {SUMS}")
            if target.exists():
                old = target.with_name(f".{top}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make_model_pack.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    pp = sub.add_parser("pack", help="zip resources/models/<name> with SHA256SUMS")
    pp.add_argument("folders", nargs="+", type=Path, help="model folder(s) holding card.json")
    pp.add_argument("--out", type=Path, default=Path("packaging/dist/model-packs"), help="output folder")
    pc = sub.add_parser("check", help="check a pack against its SHA256SUMS (and .zip.sha256 if present)")
    pc.add_argument("packs", nargs="+", type=Path)
    pi = sub.add_parser("install", help="check a pack and unpack it into a models folder")
    pi.add_argument("pack", type=Path)
    pi.add_argument("--models-dir", type=Path, required=True,
                    help="the program's resources/models folder (in a bundle: _internal/resources/models)")
    pi.add_argument("--force", action="store_true", help="replace an installed model of the same name")
    args = p.parse_args(argv)
    try:
        if args.action == "pack":
            for folder in args.folders:
                z = pack_model(folder, args.out)
                digest = z.with_name(z.name + ".sha256").read_text(encoding="utf-8").split()[0]
                print(f"{z}  {z.stat().st_size / 2**20:.1f} MiB  sha256 {digest}")
        elif args.action == "check":
            for z in args.packs:
                print(f"{z}: OK ({len(check_pack(z))} files)")
        else:
            target = install_pack(args.pack, args.models_dir, force=args.force)
            print(f"installed {target}; run `p2p-desktop models verify` to re-check it against its card")
    except PackError as exc:
        print(f"make_model_pack.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
