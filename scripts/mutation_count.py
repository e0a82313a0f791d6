"""Count a mutmut run and keep the list of equivalent mutants honest (used by scripts/mutation.sh).

mutmut names a mutant by its function and a number (``x_psnr__mutmut_13``). The number is the
mutant's position in its function, so when the function's code changes, the same name can denote
another mutation, and a list of equivalent mutants kept by name silently starts to exclude real
ones. Each line of ``scripts/mutation-equivalent.txt`` therefore carries a fingerprint of the
mutation itself (the lines it removes and adds)::

    NAME  fp:1a2b3c4d  reason

An entry whose fingerprint no longer matches the mutant of that name is stale: it is not
excluded, and it is reported so that it can be checked again.

    python scripts/mutation_count.py count SCRATCH EQUIVALENTS [SELECTED] PATH...
    python scripts/mutation_count.py merge SCRATCH EARLIER_SCRATCH[,EARLIER...] EQUIVALENTS PATH...
    python scripts/mutation_count.py show SCRATCH NAME...   # the diff and fingerprint of mutants

``merge`` counts a run made with --only (SCRATCH, the current code) together with an earlier
whole-module run (EARLIER_SCRATCH): a mutant not run again keeps its earlier verdict, which is
sound only when the tests were added to since and the mutant's function did not change (re-run
every mutant of a changed function).
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import re
import sys
from pathlib import Path

KILLED = {1, 3, 36, -24, 24, 152, 255, -11, -9, 37}
TIMEOUTS = {-24, 24, -9, 152}
WHY = {0: "survived", 33: "no tests", 5: "no tests", None: "not checked"}


def _functions(source: str) -> dict[str, str]:
    lines = source.splitlines()
    return {n.name: "\n".join(lines[n.lineno - 1:n.end_lineno]) for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _diff(funcs: dict[str, str], func: str) -> list[str] | None:
    m = re.match(r"(.*)__mutmut_\d+$", func)
    orig = funcs.get(m.group(1) + "__mutmut_orig") if m else None
    body = funcs.get(func)
    if orig is None or body is None:
        return None
    o, b = orig.splitlines()[1:], body.splitlines()[1:]  # the def lines differ by name only
    o_def, b_def = orig.splitlines()[0], re.sub(r"__mutmut_\d+", "__mutmut_orig", body.splitlines()[0])
    if o_def != b_def:  # a mutated default argument
        o, b = [o_def, *o], [b_def, *b]
    return [line for line in difflib.unified_diff(o, b, lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("---", "+++"))]


def fingerprint(diff: list[str]) -> str:
    text = "\n".join(line[0] + line[1:].strip() for line in diff)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


class Mutants:
    """The mutated sources of a mutmut scratch folder, read on demand."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self._funcs: dict[str, dict[str, str]] = {}

    def diff(self, name: str) -> list[str] | None:
        module, func = name.rsplit(".", 1)
        path = self.scratch / "mutants" / (module.replace(".", "/") + ".py")
        if module not in self._funcs:
            self._funcs[module] = _functions(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return _diff(self._funcs[module], func)


def read_equivalents(path: Path) -> dict[str, tuple[str, str]]:
    """``{name: (fingerprint, reason)}``; a line without ``fp:`` has an empty fingerprint."""
    out = {}
    if path.is_file():
        for raw in path.read_text(encoding="utf-8").splitlines():
            raw = raw.strip()
            if not raw or raw.startswith("#"):
                continue
            parts = raw.split(None, 2)
            name, fp, reason = parts[0], "", " ".join(parts[1:])
            if len(parts) > 1 and parts[1].startswith("fp:"):
                fp, reason = parts[1][3:], " ".join(parts[2:])
            out[name] = (fp, reason)
    return out


def count(scratch: Path, equivalents: Path, selected: Path | None, paths: list[str],
          earlier: list[Path] | None = None) -> None:
    chosen = set(selected.read_text().split()) if selected and selected.is_file() else None
    listed = read_equivalents(equivalents)
    mutants = Mutants(scratch)
    k = n = eq = timeouts = 0
    survivors, stale = [], []
    for p in paths:
        meta = scratch / "mutants" / (p + ".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}
        for before in earlier or []:  # newest first: a verdict not given again is taken from the next run back
            old = json.loads((before / "mutants" / (p + ".meta")).read_text())["exit_code_by_key"]
            codes = {name: old.get(name) if code is None else code for name, code in codes.items()}
        for name, code in sorted(codes.items()):
            if chosen is not None and name not in chosen:
                continue
            if name in listed:
                diff = mutants.diff(name)
                if diff is not None and fingerprint(diff) == listed[name][0]:
                    eq += 1
                    continue
                stale.append(name)
            n += 1
            if code in KILLED:
                k += 1
                timeouts += code in TIMEOUTS
            else:
                survivors.append(f"{name}: {WHY.get(code, f'exit {code}')}")
    (scratch / "survivors.txt").write_text("".join(s + "\n" for s in survivors))
    (scratch / "stale-equivalents.txt").write_text("".join(s + "\n" for s in stale))
    extra = f", {len(stale)} stale equivalent entries counted (see stale-equivalents.txt)" if stale else ""
    print(k, n, f"({timeouts} of the kills by timeout, {eq} equivalent excluded, {len(survivors)} not killed{extra})")


def show(scratch: Path, names: list[str]) -> None:
    mutants = Mutants(scratch)
    for name in names:
        diff = mutants.diff(name)
        if diff is None:
            print(f"{name}: no such mutant")
            continue
        print(f"{name}  fp:{fingerprint(diff)}")
        print("\n".join("    " + line for line in diff))


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "count":
        scratch, equivalents, *rest = argv[1:]
        selected = Path(rest[0]) if rest and not rest[0].endswith(".py") else None
        paths = rest[1:] if selected is not None else rest
        count(Path(scratch), Path(equivalents), selected, paths)
        return 0
    if len(argv) >= 5 and argv[0] == "merge":
        scratch, earlier, equivalents, *paths = argv[1:]
        count(Path(scratch), Path(equivalents), None, paths, earlier=[Path(e) for e in earlier.split(",")])
        return 0
    if len(argv) >= 3 and argv[0] == "show":
        show(Path(argv[1]), argv[2:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
