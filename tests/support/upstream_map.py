"""Test-only mitmproxy addon: send connections for fake host names to local servers.

`--set test_upstream_map=bank.test:443=127.0.0.1:8443,…` makes the proxy connect to
127.0.0.1:8443 whenever a client asks for bank.test:443, keeping the SNI and Host
as the client sent them (the proxy's own hosts mapping; no DNS involved).
"""

from mitmproxy import ctx
from mitmproxy.proxy.server_hooks import ServerConnectionHookData


class UpstreamMap:
    def __init__(self) -> None:
        self.map: dict[tuple[str, int], tuple[str, int]] = {}

    def load(self, loader) -> None:
        loader.add_option("test_upstream_map", str, "", "host:port=ip:port,… (tests only)")

    def configure(self, updated) -> None:
        if "test_upstream_map" in updated:
            self.map = {}
            for item in filter(None, ctx.options.test_upstream_map.split(",")):
                src, _, dst = item.partition("=")
                host, _, port = src.rpartition(":")
                ip, _, dport = dst.rpartition(":")
                self.map[(host.lower(), int(port))] = (ip, int(dport))

    def server_connect(self, data: ServerConnectionHookData) -> None:
        if data.server.address is None:
            return
        host, port = data.server.address
        target = self.map.get((str(host).lower(), int(port)))
        if target is not None:
            data.server.address = target


addons = [UpstreamMap()]
