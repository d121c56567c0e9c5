#!/usr/bin/env bash
# Set up (if needed) and run Kalkan's whole test suite, then the linter.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash install/setup.sh
# The proxy tests run mitmdump as the unprivileged `kalkan-proxy` account from this checkout,
# so every folder above it must be searchable by others (a `mktemp -d` folder is not).
# Say so before the tests fail for it; changing another folder's mode is the caller's call.
closed=""
dir=$root
while [ "$dir" != "/" ]; do
  dir=$(dirname "$dir")
  [ "$(( 0$(stat -c %a "$dir") & 1 ))" -eq 1 ] || closed="$closed $dir"
done
[ -z "$closed" ] || echo "WARNING: other accounts cannot enter$closed: the proxy tests will fail" \
  "(their proxy runs as kalkan-proxy from this checkout). Fix: chmod o+x$closed" >&2
.venv/bin/ruff check .
# --durations: the 30 slowest tests at the end of every run, so the suite can be kept under
# 30 minutes on a 2-core machine as it grows (share servers and clusters across a module).
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 "$@"
