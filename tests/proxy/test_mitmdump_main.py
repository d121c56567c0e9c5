"""`agent/proxy/mitmdump_main.py`: the Kalkan addon in mitmdump's own addon chain, in the place a
`-s` script's addons take, so its hooks run in the same order as with `mitmdump -s mitm_entry.py`."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from mitmproxy import options
from mitmproxy.addons.next_layer import NextLayer
from mitmproxy.addons.script import ScriptLoader

from agent.collectors.proxy import ENTRY, ProxySettings, mitmdump_command
from agent.proxy.addon import KalkanAddon
from agent.proxy.mitmdump_main import master_class
from tests.support.proxy_rig import free_port, report_through_proxy, wait_port

MAIN = Path(__file__).resolve().parents[2] / "agent" / "proxy" / "mitmdump_main.py"


def _chain_and_options() -> tuple[list, options.Options]:
    async def build():
        opts = options.Options()
        master = master_class()(opts)
        return list(master.addons.chain), opts

    return asyncio.run(build())


def test_addon_sits_right_after_the_script_loader_before_next_layer():
    chain, _ = _chain_and_options()
    kinds = [type(addon) for addon in chain]
    position = kinds.index(KalkanAddon)
    assert kinds[position - 1] is ScriptLoader
    assert kinds.index(NextLayer) > position  # Kalkan's next_layer hook decides before mitmproxy's
    assert kinds.count(KalkanAddon) == 1


def test_kalkan_options_exist_before_the_command_line_is_read():
    _, opts = _chain_and_options()
    assert "kalkan_state_dir" in opts and "kalkan_index" in opts


def test_the_direct_proxy_serves_kalkan_pages_and_sends_events(tmp_path):
    """The collector's own command line with `mitmdump -s mitm_entry.py` swapped for
    `python mitmdump_main.py`: the report page answers and its event comes over the pipe."""
    read_fd, write_fd = os.pipe()
    port = free_port()
    cmd = mitmdump_command(ProxySettings(regular_port=port, transparent_port=0), state_dir=tmp_path,
                           confdir=tmp_path / "conf", seat="s1", event_fd=write_fd)
    start = cmd.index("--quiet")
    assert cmd[start:start + 3] == ["--quiet", "-s", str(ENTRY)]
    cmd = [sys.executable, str(MAIN), "--quiet", *cmd[start + 3:]]
    proc = subprocess.Popen(cmd, pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HOME": str(tmp_path)})
    os.close(write_fd)
    try:
        wait_port(port, proc=proc)
        line = report_through_proxy(port, read_fd)
        assert line["type"] == "web.report" and line["data"]["url"] == "http://x.test/"
        assert line["subject"]["seat"] == "s1"
    finally:
        proc.terminate()
        proc.wait(10)
