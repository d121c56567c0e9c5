"""Every action the server writes to the audit log (004 §3.6) has a title in ky/ru/en, and
the known detail keys and values are shown in the reader's language (never a Python repr)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from policy_server.fleet import audit_texts

SERVER = Path(__file__).resolve().parents[2] / "policy_server"


def _calls():
    for path in SERVER.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "audit":
                kws = {k.arg: k.value for k in node.keywords}
                if "action" in kws:
                    yield path, node, kws


def _constants(node) -> list[str] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        a, b = _constants(node.body), _constants(node.orelse)
        return a + b if a is not None and b is not None else None
    return None


def _incident_actions(path: Path) -> list[str]:
    """`_change(db, incident, actor=…, action="…")` in incidents/service.py writes `incident.<action>`."""
    return re.findall(r'_change\([^)]*?action="([a-z_]+)"', path.read_text(), re.S)


def _filtering_kinds(path: Path) -> list[str]:
    """`filtering.<kind>`: the proposal kinds `propose` accepts (`if kind == "…"`)."""
    return re.findall(r'\bif kind == "([a-z_]+)"', path.read_text())


def _school_audit_actions(path: Path) -> list[str]:
    """`_school_audit(…, action="…")` in tenancy/schools.py writes that action in the school's trail."""
    return re.findall(r'_school_audit\([^)]*?action="([a-z_.]+)"', path.read_text(), re.S)


def actions_in_source() -> set[str]:
    found: set[str] = set()
    for path, _node, kws in _calls():
        action = kws["action"]
        names = _constants(action)
        if names is not None:
            found.update(names)
            continue
        text = ast.unparse(action)
        if text == "f'incident.{action}'":
            names = [f"incident.{a}" for a in _incident_actions(path)]
        elif text == "f'filtering.{proposal.kind}'":
            names = [f"filtering.{k}" for k in _filtering_kinds(path)]
        elif text == "action" and path.name == "schools.py":
            names = _school_audit_actions(path)
        assert names, f"{path}:{action.lineno}: cannot tell which actions {text} writes; teach this test"
        found.update(names)
    return found


def detail_keys_in_source() -> set[str]:
    keys: set[str] = set()
    for _path, _node, kws in _calls():
        detail = kws.get("detail")
        if isinstance(detail, ast.Dict):
            keys.update(k.value for k in detail.keys if isinstance(k, ast.Constant))
    return keys


def test_every_action_written_has_a_translated_title():
    actions = actions_in_source()
    assert len(actions) > 60, "the audit scan found too few actions: has the source layout changed?"
    assert {"person.login_failed", "incident.resolved", "filtering.matrix", "person.enable"} <= actions
    assert actions - set(audit_texts.ACTIONS) == set()
    for action in actions:
        titles = {lang: audit_texts.action_title(lang, action) for lang in ("ky", "ru", "en")}
        assert titles["en"] == audit_texts.ACTIONS[action]
        assert len(set(titles.values())) == 3, f"{action} is not translated: {titles}"


def test_no_title_for_an_action_nobody_writes():
    assert set(audit_texts.ACTIONS) - actions_in_source() == set()


def test_every_detail_key_written_has_a_translated_name():
    keys = detail_keys_in_source()
    assert len(keys) > 50
    assert keys - set(audit_texts.DETAIL_KEYS) == set()
    for key in keys:
        assert audit_texts.key_text("ru", key) != audit_texts.DETAIL_KEYS[key] or key in ("port",), key


def test_details_in_the_readers_language():
    detail = {"address": "10.0.0.7", "via": "page", "why": "wrong_password"}
    assert audit_texts.detail_text("en", detail) == (
        "address: 10.0.0.7; via: the sign-in page; why: wrong password")
    assert audit_texts.detail_text("ru", detail) == (
        "адрес: 10.0.0.7; через: страница входа; причина: неверный пароль")
    assert audit_texts.detail_text("ky", detail) == (
        "дарек: 10.0.0.7; аркылуу: кирүү барагы; себеби: туура эмес сырсөз")
    changed = {"role": {"from": "teacher", "to": "admin"}, "language": {"from": None, "to": "ky"}}
    assert audit_texts.detail_text("ru", changed) == "роль: учитель → ответственный; язык: — → кыргызский"
    assert audit_texts.detail_text("ky", {"lifted": True, "seat": None}) == "алынды: ооба; орун: —"
    assert "16:00" in audit_texts.detail_text("ru", {"ends_at": "2026-12-04T10:00:00+00:00"})  # school time


def test_an_unknown_code_is_shown_as_it_is():
    assert audit_texts.action_title("ky", "newdomain.thing_done") == "newdomain.thing_done"
    assert audit_texts.detail_text("ru", {"odd_key": {"a": [1, None]}, "x": "y"}) == "odd key: a: 1, —; x: y"
    assert audit_texts.detail_text("en", None) == ""


def test_detail_keys_built_outside_the_call_have_names_too():
    """`person.update`/`person.links` write `changes[...]`, `isuo.user_*` `_user_summary`, and
    `isuo.source_created` the import's field mapping: their keys are named in every language."""
    from policy_server.isuo.imports import FIELDS

    people = (SERVER / "people" / "service.py").read_text()
    isuo = (SERVER / "isuo" / "service.py").read_text()
    keys = set(re.findall(r'changes\["([a-z_]+)"\]', people))
    keys |= {"role", "full_name", "language"}  # update_account's own fields, as {"from", "to"}
    summary = isuo[isuo.index("def _user_summary"):].split("\n\n")[0]
    keys |= set(re.findall(r'"([a-z_]+)":', summary)) | set(FIELDS)
    assert {"rooms", "position", "logins", "login"} <= keys
    missing = keys - set(audit_texts.DETAIL_KEYS)
    assert missing == set()
    for key in keys:
        assert audit_texts.key_text("ky", key) != audit_texts.DETAIL_KEYS[key], key
