"""What the schools' command and the service say to a person, in ky/ru/en (catalogs in
policy_server/tenancy/locale, merged into the shared catalog by policy_server/web/i18n.py)."""

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

ADDED = N_("added school %(slug)s (%(name)s) at %(hosts)s")
SERVED_SOON = N_("a running kalkan-server serves it within a few seconds; no restart is needed")
SINGLE = N_("no school added: this server is a single school")
REMOVE_PLAN = N_("Removing the school %(slug)s (%(name)s) ends its service at %(hosts)s: a running "
                 "kalkan-server answers there with 404 within a few seconds, stops the school's periodic "
                 "jobs and ends its agents' push streams; no restart is needed.")
KEEPS_DATABASE = N_("Its database (%(database)s) and its folder (%(folder)s) are kept.")
DROPS_DATABASE = N_("Its database (%(database)s) is DROPPED, with everything in it; its folder (%(folder)s) "
                    "is kept. Take a backup first: kalkan-server backup --school %(slug)s --out FILE")
TYPE_SLUG = N_("Type the school's short name (%(slug)s) to drop its database:")
REMOVED = N_("removed the school %(slug)s; a running kalkan-server stops serving it within a few seconds")
DROPPED = N_("dropped its database %(database)s")
HOSTS_CHANGED = N_("the school %(slug)s is now at %(hosts)s (was %(old)s); a running kalkan-server "
                   "re-routes within a few seconds, without a restart")
HOSTS_SAME = N_("the school %(slug)s is at %(hosts)s already; nothing changed")
CERT_HINT = N_("A new host name is in the service's TLS certificate only after kalkan-server tls rotate and "
               "tls activate (docs/operations.md).")
UNKNOWN_HOST = N_("No school is served at this address. Use the address the school's responsible person "
                  "gave you (the host name matters, not only the IP address).")

ERROR_TEXTS = {
    "schools.bad_host": N_("%(host)s is not a host name. Give the name the school's people and seats use, "
                           "e.g. school-12.district.kg."),
    "schools.unknown": N_("There is no school %(slug)s on this service (schools: %(known)s). Add it with "
                          "kalkan-server schools add."),
    "schools.database_exists": N_("The PostgreSQL database %(database)s exists already. Give the school "
                                  "another short name, or its database with --school-db."),
    "schools.bad_slug": N_("%(slug)s is not a school short name. Use 1-40 lowercase letters, digits and '-', "
                           "e.g. school-12."),
    "schools.cannot_create_database": N_(
        "Could not make the school's PostgreSQL database %(database)s (%(problem)s). Give the service's "
        "user the right to make databases (ALTER ROLE … CREATEDB), or make the database yourself and give "
        "it with --school-db."),
    "schools.no_host": N_("Give at least one --host: the name the school's people and seats use."),
    "schools.duplicate": N_("The school %(slug)s is on this service already."),
    "schools.remove_needs_yes": N_("Nothing was removed: give --yes to remove the school %(slug)s."),
    "schools.drop_not_confirmed": N_("Nothing was removed: the short name typed was not %(slug)s."),
    "schools.last_school": N_("The school %(slug)s is this service's only school, and a service needs one. "
                              "Stop the service instead, or first add the school that takes its place."),
    "schools.cannot_drop_database": N_(
        "Could not drop the school's database %(database)s (%(problem)s). The school is removed from the "
        "service; drop the database yourself."),
    "schools.host_taken": N_("The host %(host)s belongs to the school %(slug)s already; each host name "
                             "serves one school."),
}

register_error_texts(ERROR_TEXTS)
