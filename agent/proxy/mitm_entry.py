"""mitmdump's entry script: `mitmdump -s <this file> --set kalkan_state_dir=…`.

mitmproxy loads scripts by path, so the repository root is put on sys.path first.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from agent.proxy.addon import KalkanAddon  # noqa: E402

addons = [KalkanAddon()]
