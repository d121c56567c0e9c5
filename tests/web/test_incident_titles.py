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


def test_bypass_kinds_are_shown_in_the_readers_language():
    """`net.bypass` kinds are codes (`mismatch`, `raw`, …): the incident title and the event's
    details name them in ky/ru/en, every kind the protocol allows, never the code itself."""
    import typing

    from policy_server import protocol
    from policy_server.incidents.details import BYPASS_KINDS, describe
    from policy_server.web.presenters import incident_title

    kinds = typing.get_args(protocol.NetBypass.model_fields["kind"].annotation)
    assert set(kinds) == set(BYPASS_KINDS)
    fallback = "English fallback"
    for kind in kinds:
        titles = {lang: incident_title(lang, "net.bypass", {"kind": kind, "seat": "s1"}, fallback)
                  for lang in ("ky", "ru", "en")}
        for lang, title in titles.items():
            assert title != fallback and f"({kind})" not in title, (lang, kind, title)
        assert f"({BYPASS_KINDS[kind]})" in titles["en"]
        if kind not in ("vpn", "tor"):  # the same word in every language
            assert len(set(titles.values())) == 3, titles
    assert incident_title("ru", "net.bypass", {"kind": "mismatch"}, fallback) == (
        "Попытка обойти фильтр (имя, которое не ведёт к адресу назначения)")
    assert incident_title("ky", "net.bypass", {"kind": "raw"}, fallback) == (
        "Чыпканы айланып өтүү аракети (веб-порттордогу туннель (HTTP да, TLS да эмес))")
    # a kind the server does not know yet is shown as it came
    assert incident_title("en", "net.bypass", {"kind": "newkind"}, fallback) == (
        "Attempt to bypass the filter (newkind)")
    shown = describe("ru", "net.bypass", {"kind": "refused", "dst_ip": "203.0.113.9", "dst_port": 51820,
                                          "occurrences": 4, "detail": "udp"})
    assert shown.summary == "трафик, отклонённый межсетевым экраном компьютера: 203.0.113.9 : 51820"
    assert ("Попытки", "4") in shown.rows
    assert ("Вид", "трафик, отклонённый межсетевым экраном компьютера") in shown.rows


def test_an_agent_upgrade_event_is_told_in_the_readers_language():
    """`agent.upgrade` (a rollout from the console) in the event details: the state and the
    reason in ky/ru/en, the package manager's own words as it said them."""
    from policy_server.incidents.details import describe

    data = {"rollout": 3, "state": "rolled_back", "from_version": "2.0", "to_version": "3.0",
            "reason_code": "install_failed", "reason": "dpkg: error processing package kalkan-agent"}
    ky, ru = describe("ky", "agent.upgrade", data), describe("ru", "agent.upgrade", data)
    assert ky.summary == "2.0 → 3.0: мурунку версияга кайтарылды"
    assert "пакеттер менеджеринде ката чыкты" in [value for _label, value in ky.rows]
    assert ("Прежняя версия", "2.0") in ru.rows
    assert ("Что сообщил менеджер пакетов", "dpkg: error processing package kalkan-agent") in ru.rows
    assert not any("_" in label for label, _value in ky.rows + ru.rows)  # no raw key names
