#!/usr/bin/env bash
# The frozen end-to-end check of a built bundle (build.sh runs it after every build; CI too):
#
#   bash packaging/check_bundle.sh BUNDLE_DIR [--only JOB]...     (jobs: frozen_jobs.py list)
#
# Moves the bundle to a fresh folder beside it (a rename: no copy) and back afterwards, runs
# every job of packaging/frozen_jobs.py with the frozen program, an empty HOME and, where
# `unshare -n` works (root, or user namespaces), no network but loopback: models verify,
# classify, FGSM and PGD with DICOM export and HTML/PDF reports (dciodvfy: no new errors), a
# byte-identical rerun, P2P fast and Diff-PGD on the demo backbone, phantoms, evaluate on four
# of them, evaluate --executor ray refused in one line, pacs echo and --send-dicom against a
# real Orthanc on loopback, the GUI smoke test on xcb under Xvfb. Exit 0 when every job passed;
# otherwise 1 and "check_bundle: FAILED: <job>: <why>".
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,13p' "$0"; exit 2; fi
BUNDLE="$(cd "$1" && pwd)"; shift
PY="${PYTHON:-python3}"
[ -x "$BUNDLE/p2p-desktop" ] || { echo "check_bundle: FAILED: $BUNDLE/p2p-desktop is missing" >&2; exit 1; }

# a moved copy: the bundle must find everything relative to itself
MOVED_PARENT="$(mktemp -d "$(dirname "$BUNDLE")/.check-moved.XXXXXX")"
MOVED="$MOVED_PARENT/p2p-desktop-moved"
mv "$BUNDLE" "$MOVED"
restore() { mv "$MOVED" "$BUNDLE" && rmdir "$MOVED_PARENT"; }
trap restore EXIT

START=$(date +%s)
set +e
if [ "${P2P_CHECK_NETWORK:-}" != "1" ] && unshare -n true 2>/dev/null; then
    echo "check_bundle: no network (unshare -n, loopback only): $MOVED"
    unshare -n bash -c 'ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null; exec "$@"' _ \
        "$PY" "$HERE/frozen_jobs.py" check "$MOVED" "$@"
else
    echo "check_bundle: WARNING: unshare -n is not available here: the check runs with the network" >&2
    "$PY" "$HERE/frozen_jobs.py" check "$MOVED" "$@"
fi
RC=$?
set -e
echo "check_bundle: check time $(( $(date +%s) - START ))s"
exit $RC
