"""Network checks on the workstation (000 §5.6): ARP spoofing of the gateway, rogue
DHCP servers, and attempts to get round the filter (foreign DNS, DoT, VPN, Tor).

* `packets`   - Ethernet frame (bytes) → plain observation (a small struct decoder, no scapy)
* `detectors` - pure detectors over observations → findings
* `ratelimit` - folds a storm of findings into a few events with `occurrences`
* `monitor`   - detectors + rate limit: what the collector and the pcap reader share
* `bpf`       - compiles the capture filter with libpcap and attaches it in the kernel
* `sniffer`   - the thin live edge (an AF_PACKET socket with that filter, one thread)
* `pcap`      - the same checks over a capture file (scapy reads the file; CLI only)
"""
