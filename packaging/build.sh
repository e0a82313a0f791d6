#!/usr/bin/env bash
# Build the one-folder p2p-desktop bundle with PyInstaller: packaging/dist/p2p-desktop/
#
#   bash packaging/build.sh [--variant cpu|cuda] [--venv DIR] [--clean] [--no-trace] [--no-check]
#
#   --variant  cpu (default): CUDA libraries that torch merely links against are kept, the
#              on-demand ones (cuDNN engines, cuSOLVER, ...) dropped, GPUs hidden at run time.
#              cuda: every nvidia-* library is shipped (several GB).
#   --venv     build environment (default: $P2P_BUILD_VENV, else ./.venv, else a new one in
#              packaging/build/venv with the project and its `package` extra installed)
#   --clean    drop PyInstaller's cache and the previous bundle first
#   --no-trace reuse packaging/build/traced_data.json instead of tracing the jobs again
#   --no-check skip the frozen end-to-end check (packaging/check_bundle.sh) after the build
#
# Steps: (1) run every job of packaging/frozen_jobs.py from source under an audit hook and list
# the data files they open (the spec collects them); (2) PyInstaller; (3) the frozen end-to-end
# check. Prints the time of each step and the bundle's size with what dominates it. Build
# output stays in packaging/build and packaging/dist (git-ignored).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
VARIANT="${P2P_BUILD_VARIANT:-cpu}"
VENV="${P2P_BUILD_VENV:-}"
CLEAN=0
CHECK=1
TRACE=1
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) VARIANT="$2"; shift 2 ;;
        --variant=*) VARIANT="${1#*=}"; shift ;;
        --venv) VENV="$2"; shift 2 ;;
        --venv=*) VENV="${1#*=}"; shift ;;
        --clean) CLEAN=1; shift ;;
        --no-check) CHECK=0; shift ;;
        --no-trace) TRACE=0; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
case "$VARIANT" in cpu|cuda) ;; *) echo "build.sh: --variant must be cpu or cuda" >&2; exit 2 ;; esac

BUILD="$HERE/build"
DIST="$HERE/dist"
mkdir -p "$BUILD"

# --- build environment ------------------------------------------------------------------------
if [ -z "$VENV" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then VENV="$ROOT/.venv"; else VENV="$BUILD/venv"; fi
fi
if [ -x "$VENV/bin/python" ]; then PY="$VENV/bin/python"
elif [ -x "$VENV/Scripts/python.exe" ]; then PY="$VENV/Scripts/python.exe"
else
    echo "build.sh: creating build environment in $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    PY="$VENV/bin/python"
    "$PY" -m pip install -q --upgrade pip
    # torch and torchvision must be installed as a matching pair (see the Makefile)
    "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    "$PY" -m pip install -q -e "$ROOT[package]"
fi
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    echo "build.sh: installing PyInstaller (the project's 'package' extra) into $VENV"
    "$PY" -m pip install -q "pyinstaller>=6.5"
fi
echo "build.sh: python $("$PY" -c 'import sys; print(sys.version.split()[0])'), PyInstaller $("$PY" -c 'import PyInstaller; print(PyInstaller.__version__)'), variant $VARIANT"

if ! ls "$ROOT"/resources/models/*/card.json >/dev/null 2>&1; then
    echo "build.sh: WARNING: no resources/models/*/card.json: the bundle will have no demo models" >&2
fi

# --- trace: the data files the jobs open, from source ---------------------------------------------
TRACED="$BUILD/traced_data.json"
if [ "$TRACE" = 1 ] || [ ! -f "$TRACED" ]; then
    T0=$(date +%s)
    "$PY" "$HERE/frozen_jobs.py" trace --out "$TRACED"
    echo "build.sh: trace time $(( $(date +%s) - T0 ))s"
fi
export P2P_TRACED_DATA="$TRACED"

# --- build --------------------------------------------------------------------------------------
ARGS=(--noconfirm --distpath "$DIST" --workpath "$BUILD/pyinstaller")
if [ "$CLEAN" = 1 ]; then ARGS+=(--clean); rm -rf "$DIST/p2p-desktop"; fi
START=$(date +%s)
(cd "$ROOT" && P2P_BUILD_VARIANT="$VARIANT" "$PY" -m PyInstaller "${ARGS[@]}" "$HERE/p2p-desktop.spec")
END=$(date +%s)

APP="$DIST/p2p-desktop"
EXE="$APP/p2p-desktop"
[ -x "$EXE" ] || EXE="$APP/p2p-desktop.exe"
SECS=$((END - START))
echo "build.sh: build time ${SECS}s ($((SECS / 60)) min $((SECS % 60)) s)"
echo "build.sh: bundle $(du -sh "$APP" | cut -f1)  $APP"
if [ -d "$APP/_internal/nvidia" ]; then
    echo "build.sh:   of which CUDA (nvidia/*): $(du -sh "$APP/_internal/nvidia" | cut -f1)"
fi

echo "build.sh: largest parts of _internal:"
du -sh "$APP"/_internal/* 2>/dev/null | sort -rh | sed -n '1,6s/^/build.sh:   /p'  # sed reads all: no SIGPIPE under pipefail

# --- the frozen end-to-end check ------------------------------------------------------------------
if [ "$CHECK" = 1 ]; then
    bash "$HERE/check_bundle.sh" "$APP"
fi
