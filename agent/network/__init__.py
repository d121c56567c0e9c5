"""Network checks on the workstation (000 §5.6): ARP spoofing of the gateway, rogue
DHCP servers, and attempts to get round the filter (foreign DNS, DoT, VPN, Tor).

* `packets`   - scapy packet → plain observation (the only module that knows scapy layers)
* `detectors` - pure detectors over observations → findings
* `ratelimit` - folds a storm of findings into a few events with `occurrences`
* `monitor`   - detectors + rate limit: what the collector and the pcap reader share
* `sniffer`   - the thin live edge (scapy AsyncSniffer with a kernel BPF filter)
* `pcap`      - the same checks over a capture file
"""
