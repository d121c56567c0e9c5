"""Firewall adapters: install and remove Kalkan's nftables table.

`linux` runs the real `nft` (optionally inside a network namespace, which the
tests use); `fake` only remembers what it was asked, for collector tests that
must not touch the host.  Both check the ruleset before installing it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Protocol

TABLE_FAMILY, TABLE_NAME = "inet", "kalkan"


class FirewallError(RuntimeError):
    pass


class Firewall(Protocol):
    def check(self, ruleset: str) -> None: ...
    def install(self, ruleset: str) -> None: ...
    def remove(self) -> bool: ...
    def installed(self) -> bool: ...


@dataclass
class LinuxFirewall:
    """The real nftables, through the `nft` command (needs root: CAP_NET_ADMIN)."""

    netns: str | None = None
    nft: str = "nft"

    def _cmd(self, *args: str) -> list[str]:
        binary = shutil.which(self.nft) or self.nft
        base = [binary, *args]
        return ["ip", "netns", "exec", self.netns, *base] if self.netns else base

    def _run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(self._cmd(*args), input=stdin, capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            raise FirewallError("the `nft` command is missing; install the Debian package nftables") from None

    def check(self, ruleset: str) -> None:
        result = self._run("-c", "-f", "-", stdin=ruleset)
        if result.returncode != 0:
            raise FirewallError(f"nft rejected the Kalkan ruleset: {result.stderr.strip()}")

    def install(self, ruleset: str) -> None:
        self.check(ruleset)
        result = self._run("-f", "-", stdin=ruleset)
        if result.returncode != 0:
            raise FirewallError(f"nft could not load the Kalkan ruleset: {result.stderr.strip()}")

    def installed(self) -> bool:
        return self._run("list", "table", TABLE_FAMILY, TABLE_NAME).returncode == 0

    def remove(self) -> bool:
        """Delete the table; True if there was one.  Leaves every other table alone."""
        if not self.installed():
            return False
        result = self._run("delete", "table", TABLE_FAMILY, TABLE_NAME)
        if result.returncode != 0:
            raise FirewallError(f"nft could not delete table {TABLE_FAMILY} {TABLE_NAME}: "
                                f"{result.stderr.strip()}")
        return True

    def listing(self) -> str:
        return self._run("list", "table", TABLE_FAMILY, TABLE_NAME).stdout

    def set_elements(self, name: str) -> list[dict]:
        """The elements of one of the table's sets (`nft -j`), [] when there is no such set."""
        import json

        result = self._run("-j", "list", "set", TABLE_FAMILY, TABLE_NAME, name)
        if result.returncode != 0:
            return []
        try:
            found = json.loads(result.stdout)
        except ValueError:
            return []
        for item in found.get("nftables", []):
            if "set" in item:
                return list(item["set"].get("elem", []))
        return []


@dataclass
class FakeFirewall:
    """Remembers the ruleset; a ruleset without the Kalkan table is refused like nft would."""

    ruleset: str | None = None
    history: list[str] = field(default_factory=list)
    elements: dict[str, list[dict]] = field(default_factory=dict)  # set name → what `nft -j` would list

    def set_elements(self, name: str) -> list[dict]:
        return list(self.elements.get(name, ())) if self.ruleset is not None else []

    def check(self, ruleset: str) -> None:
        if f"table {TABLE_FAMILY} {TABLE_NAME}" not in ruleset:
            raise FirewallError(f"ruleset does not define table {TABLE_FAMILY} {TABLE_NAME}")

    def install(self, ruleset: str) -> None:
        self.check(ruleset)
        self.ruleset = ruleset
        self.history.append("install")

    def installed(self) -> bool:
        return self.ruleset is not None

    def remove(self) -> bool:
        was = self.ruleset is not None
        self.ruleset = None
        self.history.append("remove")
        return was


def firewall_adapter(kind: str = "linux", **kwargs) -> Firewall:
    if kind == "linux":
        return LinuxFirewall(**kwargs)
    if kind == "fake":
        return FakeFirewall()
    raise ValueError(f"unknown firewall adapter {kind!r}; use 'linux' or 'fake'")
