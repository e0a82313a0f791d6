"""The mutation score's bookkeeping (scripts/mutation_count.py): equivalents are excluded only
while their fingerprint matches the mutation of that name, and merged runs keep earlier verdicts
only for mutants not run again."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = '''
def x_f__mutmut_orig(a):
    return a + 1

def x_f__mutmut_1(a):
    return a - 1

def x_f__mutmut_2(a):
    return a + 2
'''


@pytest.fixture
def mc():
    spec = importlib.util.spec_from_file_location("mutation_count", REPO / "scripts" / "mutation_count.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scratch(root: Path, codes: dict[str, int | None], source: str = SOURCE) -> Path:
    (root / "mutants" / "pkg").mkdir(parents=True)
    (root / "mutants" / "pkg" / "m.py").write_text(source)
    (root / "mutants" / "pkg" / "m.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    return root


def test_a_matching_equivalent_is_excluded_and_a_stale_one_is_counted(mc, tmp_path, capsys):
    scratch = _scratch(tmp_path / "s", {"pkg.m.x_f__mutmut_1": 0, "pkg.m.x_f__mutmut_2": 0})
    mc.show(scratch, ["pkg.m.x_f__mutmut_1"])
    shown = capsys.readouterr().out.splitlines()
    fp = shown[0].split("fp:")[1]
    assert shown[1:] == ["    -    return a + 1", "    +    return a - 1"]
    eq = tmp_path / "eq.txt"
    eq.write_text(f"pkg.m.x_f__mutmut_1  fp:{fp}  reason\npkg.m.x_f__mutmut_2  fp:{fp}  the same reason, stale\n")
    mc.count(scratch, eq, None, ["pkg/m.py"])
    assert capsys.readouterr().out.split()[:2] == ["0", "1"]  # one excluded, the stale one counted
    assert (scratch / "stale-equivalents.txt").read_text() == "pkg.m.x_f__mutmut_2\n"
    assert (scratch / "survivors.txt").read_text() == "pkg.m.x_f__mutmut_2: survived\n"


def test_merge_takes_earlier_verdicts_only_for_mutants_not_run_again(mc, tmp_path, capsys):
    old = _scratch(tmp_path / "old", {"pkg.m.x_f__mutmut_1": 1, "pkg.m.x_f__mutmut_2": 0})
    new = _scratch(tmp_path / "new", {"pkg.m.x_f__mutmut_1": None, "pkg.m.x_f__mutmut_2": 1})
    mc.count(new, tmp_path / "none.txt", None, ["pkg/m.py"], earlier=[old])
    assert capsys.readouterr().out.split()[:2] == ["2", "2"]
    timeout = _scratch(tmp_path / "t", {"pkg.m.x_f__mutmut_1": -24, "pkg.m.x_f__mutmut_2": None})
    mc.count(timeout, tmp_path / "none.txt", None, ["pkg/m.py"], earlier=[old])
    assert capsys.readouterr().out.startswith("1 2 (1 of the kills by timeout")
