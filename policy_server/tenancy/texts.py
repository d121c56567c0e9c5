"""What the schools' command and the service say to a person, in ky/ru/en (catalogs in
policy_server/tenancy/locale, merged into the shared catalog by policy_server/web/i18n.py)."""

from policy_server.errors import register_error_texts
from policy_server.web.i18n import N_

ADDED = N_("added school %(slug)s (%(name)s) at %(hosts)s")
SERVED_SOON = N_("a running kalkan-server serves it within a few seconds; no restart is needed")
SINGLE = N_("no school added: this server is a single school")
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
    "schools.host_taken": N_("The host %(host)s belongs to the school %(slug)s already; each host name "
                             "serves one school."),
}

register_error_texts(ERROR_TEXTS)
