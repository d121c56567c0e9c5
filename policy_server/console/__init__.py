"""Shared pieces of the responsible person's console (issue 11): the page edge (`kit`), the
error summary partial (`console/errors.html`), the navigation labels and their translations.

The pages themselves live in their domains: `people/pages.py`, `school/pages.py`,
`fleet/pages.py` (fleet health and approvals), `fleet/audit_pages.py` (the audit log)."""

from policy_server.web.i18n import N_

# The console's links in the shared navigation (base.html loops over the same list; the
# labels are marked here so that this package's catalog translates them).
NAV_LABELS = (N_("Fleet health"), N_("Approvals"), N_("Rooms and enrolment"), N_("People"),
              N_("Audit log"), N_("My password"))
