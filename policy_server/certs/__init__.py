"""Rotating the server's TLS certificate without enrolling the seats again
(docs/operations.md "Rotating the server certificate").

`kalkan-server tls rotate` makes the *next* certificate beside the served one; every answer of
the API then announces its fingerprint (`announce.AnnounceNextPin`, header `Kalkan-Next-Pin`)
over the channel the agents already pin; an agent accepts it beside its pin and reports the
pins it holds in its heartbeat; `tls status` counts the seats that hold it; `tls activate`
makes it the served certificate (after a restart), keeping the old one as `previous`.
"""
