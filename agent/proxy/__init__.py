"""The filtering proxy on every workstation (issue 4).

A mitmproxy addon (`addon.KalkanAddon`) driven by `filters/` and the policy
bundle, run by the agent's `ProxyCollector` as a supervised `mitmdump` child.
Pure parts (pages, history, usage counts, ISUO sessions, nftables rendering)
live in their own modules and are tested without mitmproxy.
"""
