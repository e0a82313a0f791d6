#!/usr/bin/env bash
# Proof that the frozen check catches a bundle with a collected data file missing (CI runs it):
#
#   bash packaging/check_bundle_detects.sh BUNDLE_DIR
#
# For each data file below: a hard-linked copy of the bundle (no gigabytes copied) without that
# file must fail packaging/check_bundle.sh with a FAILED line naming the job that needs it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -eq 1 ] || { sed -n '2,7p' "$0"; exit 2; }
BUNDLE="$(cd "$1" && pwd)"
# file inside _internal | the job that must report it
CASES=(
    "p2p_desktop/export/confidentiality_profile.json|fgsm with DICOM export and reports"
    "kernels/_internals/python_depends.json|p2p fast on the demo backbone"
)
FAILED=0
for case in "${CASES[@]}"; do
    file="${case%%|*}"; job="${case#*|}"
    [ -f "$BUNDLE/_internal/$file" ] || { echo "detects: FAILED: the bundle has no _internal/$file to remove" >&2; exit 1; }
    COPY="$(mktemp -d "$(dirname "$BUNDLE")/.check-detects.XXXXXX")/p2p-desktop"
    cp -al "$BUNDLE" "$COPY"
    rm "$COPY/_internal/$file"
    set +e
    out="$(bash "$HERE/check_bundle.sh" "$COPY" 2>&1)"
    rc=$?
    set -e
    rm -rf "$(dirname "$COPY")"
    if [ $rc -ne 0 ] && grep -q "check_bundle: FAILED: $job:" <<<"$out"; then
        echo "detects: without $file the check fails at \"$job\" (as it must)"
    else
        echo "detects: FAILED: without $file the check should fail at \"$job\"; it exited $rc:" >&2
        tail -n 20 <<<"$out" >&2
        FAILED=1
    fi
done
exit $FAILED
