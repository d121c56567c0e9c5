#!/usr/bin/env bash
# Set up Kalkan for development, tests and the demo on a fresh Debian 12 machine:
# the Debian packages it needs, and a virtual environment in .venv with Kalkan installed.
# Safe to run again: it only does what is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash install/apt-install.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -U pip
fi
# Re-install only when pyproject.toml or the pinned versions changed since the last
# successful install.  install/constraints.txt pins every package to the versions the
# suite last passed with, so a fresh machine does not pick up a release nobody tested.
stamp=.venv/.kalkan-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ install/constraints.txt -nt "$stamp" ]; then
  .venv/bin/pip install -q -c install/constraints.txt -e '.[test]'
  touch "$stamp"
fi
