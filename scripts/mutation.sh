#!/usr/bin/env bash
# Mutation testing as a measurement (not part of CI): mutate each named module with mutmut 3,
# run only the tests that cover it, and print "killed K of N" per module and in total.
#
#   scripts/mutation.sh [--from DIR] [--tests "TESTS"] [--only GLOBS] [--sample N] [--jobs N]
#                       [--timeout-multiplier X] MODULE...
#
# MODULE is a path such as p2p_desktop/io/outputs.py (or p2p_desktop.io.outputs). Several
# paths joined by "+" are measured together as one module (p2p_desktop/export/provenance.py+
# p2p_desktop/cli/cmd_rerun.py). Each module runs in its own scratch copy of the project
# (tracked and untracked, non-ignored files of --from DIR, default: this checkout), so nothing in
# the tree is changed. The tests run are those listed below for the module (or --tests).
#
# Counting: killed = killed + timeout + crashed; N = all mutants minus the equivalent ones
# listed in scripts/mutation-equivalent.txt (one "MUTANT_NAME  fp:FINGERPRINT  reason" a line; an
# entry whose mutation changed since it was listed is stale and counted, see mutation_count.py;
# `python scripts/mutation_count.py show SCRATCH NAME` prints a mutant's fingerprint). Survivors and
# mutants no selected test reaches are listed in the scratch folder's survivors.txt; see one
# with `cd SCRATCH && mutmut show NAME`. --only keeps the mutants whose names match one of the
# comma-separated globs (e.g. '*x_run_attack__*' for one function); --sample N measures a seeded
# random sample of N of them (an estimate, said so in the output). Needs the `mutation` extra
# (pip install -e .[mutation]). Slow on two cores: one module at a time, under `nice -n 10`.
# --timeout-multiplier X (mutmut's, default 15): a mutant's tests may use 2 * X * (their measured
# time + 1 s) CPU seconds, and half that in wall time, before the mutant counts as a timeout
# (killed). Keep the default: a low X counts a worker's slow start-up as a kill.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(cd "$here/.." && pwd)"
tests_override=""
jobs="${MUTATION_JOBS:-1}"
keep="${MUTATION_KEEP:-0}"
only=""
sample=0
timeout_multiplier="${MUTATION_TIMEOUT_MULTIPLIER:-15}"
modules=()
while [ $# -gt 0 ]; do
  case "$1" in
    --from) src="$(cd "$2" && pwd)"; shift 2 ;;
    --tests) tests_override="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --sample) sample="$2"; shift 2 ;;
    --timeout-multiplier) timeout_multiplier="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "mutation.sh: unknown option $1" >&2; exit 2 ;;
    *) modules+=("$1"); shift ;;
  esac
done
if [ ${#modules[@]} -eq 0 ]; then
  echo "usage: scripts/mutation.sh [--from DIR] [--tests \"TESTS\"] [--jobs N] MODULE..." >&2
  exit 2
fi
python="${PYTHON:-python}"
# One torch/OpenMP thread per worker: --jobs workers share the cores, and OpenMP threads that spin
# while waiting for a core add CPU time, which mutmut's CPU limit counts as a timeout (a kill).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
if ! "$python" -c "import mutmut" 2>/dev/null; then
  echo "mutation.sh: mutmut is not installed (pip install -e '.[mutation]')" >&2
  exit 2
fi
equivalents="$src/scripts/mutation-equivalent.txt"
[ -f "$equivalents" ] || equivalents="$here/mutation-equivalent.txt"

# The narrowest tests that exercise each module's promises.
default_tests() {
  case "$1" in
    p2p_desktop/io/outputs.py) echo "tests/test_outputs_promises.py tests/test_outputs_details.py" ;;
    p2p_desktop/attacks/runner.py) echo "tests/test_runner_judgement.py tests/test_hardening_oom.py" ;;
    p2p_desktop/metrics/similarity.py) echo "tests/test_metrics_reference.py tests/test_metrics_paper.py" ;;
    p2p_desktop/export/provenance.py) echo "tests/test_provenance_record.py tests/test_plugin_integrity.py" ;;
    p2p_desktop/jobs/rerun.py)
      echo "tests/test_rerun_job.py tests/test_rerun_settings.py tests/test_provenance.py tests/test_provenance_record.py tests/test_plugin_integrity.py" ;;
    p2p_desktop/export/deidentify.py) echo "tests/test_deidentify_table.py tests/test_deidentify_details.py" ;;
    p2p_desktop/audit.py) echo "tests/test_audit.py tests/test_audit_integrity.py tests/test_audit_details.py tests/test_audit_edges.py" ;;
    p2p_desktop/plugins.py) echo "tests/test_plugins.py tests/test_plugin_integrity.py tests/test_plugin_details.py tests/test_plugin_edges.py" ;;
    *) # fall back to the test files that name the module
      grep -lw "$(basename "$1" .py)" "$src"/tests/test_*.py 2>/dev/null | sed "s|^$src/||" | tr '\n' ' ' ;;
  esac
}

total_k=0
total_n=0
summary=()
for module in "${modules[@]}"; do
  IFS='+' read -r -a paths <<< "$module"
  tests=""
  for i in "${!paths[@]}"; do
    p="${paths[$i]}"
    case "$p" in *.py) ;; *) p="${p//./\/}.py" ;; esac
    if [ ! -f "$src/$p" ]; then
      echo "mutation.sh: no module $p in $src" >&2
      exit 2
    fi
    paths[$i]="$p"
    tests="$tests $(default_tests "$p")"
  done
  [ -n "$tests_override" ] && tests="$tests_override"
  tests="$(echo "$tests" | tr ' ' '\n' | sed '/^$/d' | sort -u | tr '\n' ' ')"
  if [ -z "$tests" ]; then
    echo "mutation.sh: no tests known for $module; pass --tests" >&2
    exit 2
  fi

  scratch="$(mktemp -d "${TMPDIR:-/tmp}/p2p-mutation.XXXXXX")"
  (cd "$src" && git ls-files -z -co --exclude-standard) | (cd "$src" && tar --null -T - -cf -) | tar -xf - -C "$scratch"
  rm -rf "$scratch/mutants"
  "$python" - "$scratch/pyproject.toml" "$tests" "$timeout_multiplier" "${paths[@]}" <<'PY'
import sys
pyproject, tests, multiplier, *paths = sys.argv[1:]
def toml_list(xs):
    return "[" + ", ".join(f'"{x}"' for x in xs) + "]"
with open(pyproject, "a", encoding="utf-8") as fh:
    fh.write("\n[tool.mutmut]\n")
    fh.write('source_paths = ["p2p_desktop"]\n')
    fh.write(f"only_mutate = {toml_list(paths)}\n")
    fh.write(f"pytest_add_cli_args_test_selection = {toml_list(tests.split())}\n")
    fh.write('pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:randomly", "-q", "-x"]\n')
    fh.write('also_copy = ["resources", "plugins", "scripts", "benchmarks"]\n')
    fh.write("use_git_change_detection = false\n")
    fh.write(f"timeout_multiplier = {float(multiplier)}\n")
    # mutmut forks each mutant's worker; forked straight from a process whose torch has run
    # OpenMP work, a worker that runs torch again can hang (libgomp is not fork-safe) and be
    # counted as a timeout (killed) whatever the mutant did. A fork server that has only
    # imported the tests keeps those verdicts honest.
    fh.write('process_isolation = "forkserver"\n')
PY
  echo "== $module: tests $tests(scratch $scratch)"
  start=$(date +%s)
  log="$scratch/mutmut.log"
  selected="$scratch/selected.txt"
  set +e
  if [ -n "$only" ] || [ "$sample" != "0" ]; then
    # generate the mutants and map the tests once (a name that matches no mutant runs none), then pick
    (cd "$scratch" && env -u PYTHONPATH "$python" -m mutmut run --max-children "$jobs" "no-such-mutant*") \
      >"$log" 2>&1
    "$python" - "$scratch" "$only" "$sample" "${paths[@]}" >"$selected" <<'PY'
import fnmatch, json, random, sys
from pathlib import Path
scratch, only, sample, *paths = sys.argv[1:]
names = []
for p in paths:
    meta = Path(scratch) / "mutants" / (p + ".meta")
    if meta.is_file():
        names += json.loads(meta.read_text())["exit_code_by_key"]
total = len(names)
globs = [g for g in only.split(",") if g]
if globs:
    names = [n for n in names if any(fnmatch.fnmatch(n, g) for g in globs)]
names.sort()
if 0 < int(sample) < len(names):
    names = sorted(random.Random(0).sample(names, int(sample)))
print("\n".join(names))
print(f"{len(names)} of {total} mutants selected", file=sys.stderr)
PY
    if [ ! -s "$selected" ]; then
      echo "mutation.sh: no mutant of $module matches --only; see $log" >&2
      exit 2
    fi
    echo "  $(wc -l < "$selected") mutants selected"
    (cd "$scratch" && xargs -r -a "$selected" env -u PYTHONPATH "$python" -m mutmut run --max-children "$jobs") \
      >>"$log" 2>&1
  else
    (cd "$scratch" && env -u PYTHONPATH "$python" -m mutmut run --max-children "$jobs") >"$log" 2>&1
  fi
  rc=$?
  set -e
  seconds=$(( $(date +%s) - start ))
  if [ $rc -ne 0 ]; then
    echo "mutation.sh: mutmut failed on $module (exit $rc); last lines of $log:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  read -r k n line < <("$python" "$here/mutation_count.py" count "$scratch" "$equivalents" "$selected" "${paths[@]}")
  pct=$(awk -v k="$k" -v n="$n" 'BEGIN { printf "%.1f", n ? 100 * k / n : 0 }')
  echo "$module: killed $k of $n ($pct %) $line in ${seconds}s"
  if [ "$k" -lt "$n" ]; then
    sed 's/^/  /' "$scratch/survivors.txt"
  fi
  summary+=("$module: killed $k of $n ($pct %)")
  total_k=$((total_k + k))
  total_n=$((total_n + n))
  if [ "$keep" = "1" ] || [ "$k" -lt "$n" ] || [ -n "$only" ]; then  # an --only run is kept for `merge`
    echo "  (kept $scratch for \`mutmut show\`; remove it when done)"
  else
    rm -rf "$scratch"
  fi
done
echo "== summary"
printf '%s\n' "${summary[@]}"
pct=$(awk -v k="$total_k" -v n="$total_n" 'BEGIN { printf "%.1f", n ? 100 * k / n : 0 }')
echo "total: killed $total_k of $total_n ($pct %)"
