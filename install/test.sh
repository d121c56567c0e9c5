#!/usr/bin/env bash
# Set up (if needed) and run Kalkan's whole test suite, then the linter.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash install/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
