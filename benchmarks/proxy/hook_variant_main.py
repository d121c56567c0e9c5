"""Benchmark-only: `hook_variant_entry.py`'s addon variants run through `agent/proxy/mitmdump_main.py`
(the addon in mitmdump's own addon chain instead of a `-s` script).

    KALKAN_HOOK_VARIANT=nohooks python benchmarks/proxy/hook_variant_main.py [mitmdump arguments]
"""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[0] = str(HERE.parents[1])

from agent.proxy import mitmdump_main  # noqa: E402

_spec = importlib.util.spec_from_file_location("hook_variant_entry", HERE / "hook_variant_entry.py")
_variants = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_variants)

if __name__ == "__main__":
    mitmdump_main.run(sys.argv[1:], make_addon=_variants.Variant)
