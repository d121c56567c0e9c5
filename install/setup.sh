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
# The commands a person types, on PATH: /usr/local/bin as root, else ~/.local/bin (issue 11).
# Links into this checkout's .venv, replaced only when they are ours (never another program).
if [ "$(id -u)" = 0 ]; then bindir=/usr/local/bin; else bindir=$HOME/.local/bin; fi
bindir=${KALKAN_BIN_DIR:-$bindir}  # tests put the links in a folder of their own
mkdir -p "$bindir"
for cmd in kalkan-server kalkan-agent; do
  target=$root/.venv/bin/$cmd
  link=$bindir/$cmd
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "kalkan: $link exists and is not a link to Kalkan; leaving it (run $target)" >&2
  elif [ "$(readlink "$link" 2>/dev/null)" != "$target" ]; then
    ln -sfn "$target" "$link"
  fi
done
case ":$PATH:" in *":$bindir:"*) ;; *) echo "kalkan: add $bindir to PATH to type kalkan-server and kalkan-agent" >&2 ;; esac
