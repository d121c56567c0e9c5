"""The `/etc/hosts` line that makes `http://report.kalkan/` open in transparent mode.

Why an address at all: a browser with no proxy setting must first resolve the name,
then connect; the nftables redirect (`install/nftables/kalkan.nft.tmpl`) sends that
connection's port 80 to the transparent proxy, which answers by the `Host` header.
The redirect skips *local* destinations (`fib daddr type local return`, so local web
servers keep working), so 127.0.0.1 would not reach the proxy.  We use 192.0.2.80:
TEST-NET-1 (RFC 5737), reserved for documentation and never routed on the internet, so
it can never be a real site, yet it is non-local and therefore captured by the redirect.
If the proxy is down the connection simply fails.

The line carries a marker so `remove_entry` (kalkan-agent uninstall) removes exactly it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPORT_HOST = "report.kalkan"  # the proxy's own report page (000 §8.3)
REPORT_ADDRESS = "192.0.2.80"
MARKER = "# kalkan-agent: report page (removed by kalkan-agent uninstall)"


def _lines_without_ours(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.rstrip().endswith(MARKER)]


def render(text: str, names: list[str], address: str = REPORT_ADDRESS) -> str:
    """The hosts file with our one line (replacing an older one of ours), pure."""
    lines = _lines_without_ours(text)
    lines.append(f"{address}\t{' '.join(names)}\t{MARKER}")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    """Atomic replace that keeps the file's mode (hosts is read by every program)."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=".hosts.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_entry(path: Path, names: list[str], address: str = REPORT_ADDRESS) -> bool:
    """Make sure our line is there; True if the file changed."""
    text = path.read_text() if path.exists() else ""
    wanted = render(text, names, address)
    if wanted == text:
        return False
    _write(path, wanted)
    return True


def remove_entry(path: Path) -> bool:
    """Remove our line, and nothing else; True if it was there."""
    if not path.exists():
        return False
    text = path.read_text()
    lines = _lines_without_ours(text)
    if len(lines) == len(text.splitlines()):
        return False
    _write(path, "\n".join(lines) + ("\n" if lines else ""))
    return True
