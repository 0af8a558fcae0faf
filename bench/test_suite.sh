#!/usr/bin/env bash
# The test suite's wall time at a reference commit and at HEAD, back to back on this machine, and their ratio
# (machines of the same kind differ a lot in speed: only the ratio means something).
#   bench/test_suite.sh [REFERENCE]      REFERENCE defaults to 31ff28d, the suite before the speed-up work
# Both run from fresh clones with this checkout's .venv, exactly as `make test` runs them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
reference=${1:-31ff28d}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PATH="$root/.venv/bin:$PATH" DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1

suite() {  # suite NAME COMMIT -> seconds
    git clone -q "$root" "$work/$1"
    git -C "$work/$1" checkout -q "$2"
    ln -s "$root/.venv" "$work/$1/.venv"
    cp "$root/.dvc/plots_template.html" "$work/$1/.dvc/"
    local start=$SECONDS
    (cd "$work/$1" && make -o .venv/.installed test >"$work/$1.log" 2>&1) || { tail -30 "$work/$1.log" >&2; exit 1; }
    tail -1 "$work/$1.log" >&2
    echo $((SECONDS - start))
}

before=$(suite reference "$reference")
after=$(suite head HEAD)
echo "test suite at $reference: ${before} s; at HEAD ($(git -C "$root" rev-parse --short HEAD)): ${after} s; ratio $(python3 -c "print(f'{$after / $before:.2f}')")"
