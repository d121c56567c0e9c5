"""Incident titles of the ISUO cross-checks, in the reader's language (merged into
`policy_server.web.presenters.INCIDENT_TITLES`; translated by this package's catalog).
Kept free of imports beyond `N_` so that the presenters can import it cheaply."""

from policy_server.web.i18n import N_

ISUO_TITLES = {
    "isuo.unknown_login": N_("ISUO login %(login)s is not in the ISUO register"),
    "isuo.no_obligation": N_("ISUO used by %(name)s without a signed obligation"),
    "isuo.after_blocked": N_("ISUO used by %(name)s after the access was blocked on %(blocked_on)s"),
    "isuo.after_left": N_("ISUO used by %(name)s after leaving the school on %(left_on)s"),
    "isuo.outside_hours": N_("ISUO used outside working time: %(local_time)s"),
    "isuo.noncompliant_seat": N_("ISUO used on %(where)s while the workstation was out of compliance"),
    "isuo.import_gap": N_("No ISUO records imported for %(day)s although the filter saw ISUO sessions"),
    "isuo.review_overdue": N_("The termly ISUO access review due %(due_on)s is not signed"),
}
