"""What `kalkan-server tls …` says to a person, in ky/ru/en (catalogs in policy_server/certs/locale,
merged into the shared catalog by policy_server/web/i18n.py)."""

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

MADE = N_("Made the next server certificate (a new key). It is not served yet.")
SERVED_NOW = N_("served now: %(fingerprint)s")
NEXT = N_("next:       %(fingerprint)s")
NAMES = N_("names in the next certificate: %(names)s")
REPLACED = N_("It replaces the next certificate %(fingerprint)s made before: seats that learned that one "
              "learn this one instead.")
STEPS = N_("What happens next: the running server announces the next certificate to every seat over the "
           "connection the seats already trust (no restart needed; with several replicas, copy "
           "tls/server.next.crt and tls/server.next.key to each). A seat that is on accepts it within "
           "minutes. Watch kalkan-server tls status; when every seat in use holds it, run kalkan-server "
           "tls activate, then restart the server.")

SERVED = N_("served certificate: %(fingerprint)s (%(path)s, valid until %(until)s)")
NEXT_CERT = N_("next certificate: %(fingerprint)s (%(path)s; announced to the seats, not served yet)")
NO_NEXT = N_("no next certificate: no rotation under way (start one with kalkan-server tls rotate)")
PREVIOUS = N_("previous certificate: %(fingerprint)s (%(path)s; no longer served)")
READY_NEXT = N_("seats holding the next certificate: %(ready)s of %(total)s")
READY_SERVED = N_("seats holding the served certificate: %(ready)s of %(total)s")
WAITING = N_("not yet, seen in the last %(days)s days (activate waits for them):")
ABSENT = N_("not seen in the last %(days)s days (they must be enrolled again unless they come on before "
            "activate):")
ABSENT_SERVED = N_("these seats do not hold the served certificate: enrol them again (kalkan-agent enroll "
                   "--force …):")
SEAT = N_("%(name)s (room %(room)s, last seen %(seen)s)")
SEAT_NEVER = N_("%(name)s (room %(room)s, never seen)")

ACTIVATED = N_("The next certificate %(fingerprint)s is now the server's certificate; the old one "
               "%(previous)s is kept as %(path)s.")
RESTART = N_("The running server still serves the old certificate until it restarts: systemctl restart "
             "kalkan-server (or stop and start kalkan-server run). Seats holding the new pin switch to it "
             "on their next connection and drop the old one.")
REPLICAS = N_("Several replicas behind nginx: copy tls/server.crt and tls/server.key to every replica and "
              "to the files of nginx's ssl_certificate and proxy_ssl_trusted_certificate, restart every "
              "replica, then systemctl reload nginx.")
FORCED = N_("--force: %(count)s seat(s) seen recently do not hold the new certificate; enrol them again "
            "(kalkan-agent enroll --force …).")
ABSENT_AFTER = N_("%(count)s seat(s) not seen recently do not hold the new certificate: enrol them again "
                  "when they are back.")
CANCELLED = N_("Withdrew the next certificate %(fingerprint)s: its key is deleted, and the running server "
               "tells the seats to drop its pin (no restart needed). Start again with kalkan-server tls "
               "rotate.")
WITHDRAWN = N_("withdrawn certificate: %(fingerprint)s (the seats are told to drop its pin)")
FINGERPRINT_NEXT = N_("a rotation is under way: the next certificate %(fingerprint)s is announced to the "
                      "seats, not served yet (kalkan-server tls status)")

ERROR_TEXTS = {
    "tls.no_certificate": N_("There is no server certificate at %(path)s yet. Start the server once "
                             "(kalkan-server run) or run kalkan-server fingerprint, then rotate."),
    "tls.next_exists": N_("A next certificate exists already (%(fingerprint)s); the seats may be learning "
                          "it. See kalkan-server tls status, then kalkan-server tls activate; or make "
                          "another with --replace."),
    "tls.nothing_to_cancel": N_("There is no next certificate to withdraw. See kalkan-server tls status."),
    "tls.no_next": N_("There is no next certificate to activate. Make one with kalkan-server tls rotate."),
    "tls.next_changed": N_("The next certificate changed while its seats were counted. Run the command "
                           "again."),
    "tls.files_not_writable": N_("The server may not write the certificate files in %(folder)s. Give the "
                                 "user the server runs as the right to write there (chown -R kalkan-server: "
                                 "%(folder)s), then run the command again."),
    "tls.restart_first": N_("The server has not been restarted since the last certificate was activated: it "
                            "still serves %(fingerprint)s. Restart it first (systemctl restart "
                            "kalkan-server), then make the next certificate."),
    "install.no_next_certificate": N_("No certificate rotation is under way: there is no next certificate."),
    "tls.seats_not_ready": N_("%(count)s seat(s) seen in the last %(days)s days do not hold the next "
                              "certificate yet: %(names)s. They would have to be enrolled again. Wait until "
                              "they have been on for a few minutes (kalkan-server tls status), or add "
                              "--force."),
}

register_error_texts(ERROR_TEXTS)
