"""ISUO access: the register of who may use ISUO, imports of who did, and the cross-checks.

The ministry's order 002 (§4, §5, annexes 1.1 and 1.2) says who may use ISUO and on what
terms; the school's regulation adds 000 §6.5, §6.8, §6.10.  This package owns:

* `models.py` — the register (people, logins, obligations, consents), the address plan,
  import sources and imported records, working hours and holidays, termly reviews;
* `service.py` — plain functions over a session (register, consents, reviews, settings);
* `imports.py` — CSV/XLSX imports of ISUO's own access records (one transaction, row hash);
* `rules.py` — the cross-checks as pure functions (no database);
* `checks.py` — gathers the data, runs the rules, hands the drafts to the incident engine;
* `findings.py` — `isuo_findings(db, start=, end=)`, the pure-query summary for reports;
* `views.py` (JSON) and `pages.py` (HTML) with their templates and locale.

docs/isuo.md describes the register, the formats and every check with its clause.
"""

from policy_server.isuo import error_texts as _error_texts  # noqa: E402,F401  (registers the codes' texts)
