"""Every incident a rule can open has a translated title: without one the console falls
back to the rule's English title, which may name the OS user (002 §3.1 for directors)."""

import re

from policy_server.web.presenters import INCIDENT_TITLES


def _rule_names_in_source(repo_root) -> set[str]:
    names = set()
    # every package of the server may open incidents (rules, checks, isuo, agents' binding,
    # login bursts, …): `rule="…"` in a draft, or a module's `RULE = "…"`
    for path in (repo_root / "policy_server").rglob("*.py"):
        text = path.read_text()
        names.update(re.findall(r'\brule="([a-z_]+\.[a-z_.]+)"', text))
        names.update(re.findall(r'^RULE = "([a-z_]+\.[a-z_.]+)"', text, re.M))
    return names


def test_every_rule_has_a_translated_title(repo_root):
    names = _rule_names_in_source(repo_root)
    assert len(names) > 15, "the rule scan found too few rules: has the source layout changed?"
    assert names - set(INCIDENT_TITLES) == set()


def test_no_title_for_a_rule_that_does_not_exist(repo_root):
    assert set(INCIDENT_TITLES) - _rule_names_in_source(repo_root) == set()
