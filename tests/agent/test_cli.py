"""`kalkan-agent` commands that need no server: status, uninstall, enrol refusals."""

from __future__ import annotations

import json
from pathlib import Path

from agent.cli import format_status, gather_status, main
from agent.collectors import registry
from agent.outbox import Outbox, OutboxSink
from agent.state import AgentConfig, AgentState


def test_status_not_enrolled_json(tmp_path: Path, capsys) -> None:
    assert main(["status", "--state-dir", str(tmp_path / "s"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["enrolled"] is False and report["running"] is False and report["outbox_depth"] == 0


def test_status_shows_outbox_rejects_and_policy_in_russian(state: AgentState, monkeypatch, capsys) -> None:
    with Outbox(state.paths.outbox) as outbox:
        sink = OutboxSink(outbox)
        sink.emit("web.report", {"url": "http://a.test/"})
        bad = sink.emit("web.report", {"url": "http://b.test/"})
        outbox.reject(bad, "data.url: not allowed")
    state.save_config(AgentConfig(server_url="http://127.0.0.1:9", agent_id="a-1", server_sha256=None))
    state.write_token("t")
    report = gather_status(state)
    assert report["server_reachable"] is False and report["outbox_depth"] == 1
    assert report["rejected"][0]["error"] == "data.url: not allowed"
    text = format_status(report, "ru")
    assert "Событий ждут отправки:" in text and "a-1" in text and "not allowed" in text
    monkeypatch.setenv("LANG", "ky_KG.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    assert main(["status", "--state-dir", str(state.paths.root), "--no-server"]) == 1  # not running
    assert "Катталган:" in capsys.readouterr().out


def test_uninstall_calls_each_collector_classmethod(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(registry.COLLECTORS, "with_uninstall", "tests.agent.sample_collectors:WithUninstall")
    state_dir = tmp_path / "s"
    state_dir.mkdir()
    assert main(["uninstall", "--state-dir", str(state_dir)]) == 0
    assert (state_dir / "uninstalled-marker").read_text() == "done"
    assert "with_uninstall: uninstalled" in capsys.readouterr().out
    assert main(["uninstall", "--state-dir", str(state_dir), "--purge"]) == 0
    assert not state_dir.exists()


def test_enroll_refuses_a_fingerprint_mismatch(tmp_path: Path, https_endpoint, capsys) -> None:
    state_dir = tmp_path / "s"
    code = main(["enroll", "--server", https_endpoint.url, "--code", "ABCD-1234", "--state-dir",
                 str(state_dir), "--fingerprint", "11" * 32])
    assert code == 2
    assert "refusing to enrol" in capsys.readouterr().err
    assert https_endpoint.requests == [] and not (state_dir / "config.json").exists()


def test_enroll_reports_the_servers_refusal(tmp_path: Path, https_endpoint, self_signed, capsys) -> None:
    from tests.agent.conftest import json_answer

    https_endpoint.handler = lambda *a: json_answer(403, {"detail": "this enrolment code has expired; "
                                                                    "ask for a new one"})
    state_dir = tmp_path / "s"
    code = main(["enroll", "--server", https_endpoint.url, "--code", "ABCD-1234", "--state-dir",
                 str(state_dir), "--fingerprint", self_signed.sha256])
    assert code == 2
    assert "expired" in capsys.readouterr().err
    assert not (state_dir / "config.json").exists() and not (state_dir / "token").exists()


def test_enroll_speaks_the_persons_language_and_asks_the_server_for_it(
        tmp_path: Path, https_endpoint, self_signed, capsys, monkeypatch) -> None:
    from tests.agent.conftest import json_answer

    monkeypatch.setenv("LANG", "ru_RU.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    https_endpoint.handler = lambda *a: json_answer(403, {"detail": "срок действия кода истёк",
                                                          "code": "enrollment.code_expired"})
    code = main(["enroll", "--server", https_endpoint.url, "--code", "ABCD-1234", "--state-dir",
                 str(tmp_path / "s"), "--fingerprint", self_signed.sha256])
    assert code == 2
    out = capsys.readouterr()
    assert "SHA-256 сертификата сервера" in out.out
    assert "сервер отказал в регистрации: срок действия кода истёк" in out.err
    [(_method, _path, headers, _body)] = https_endpoint.requests
    assert {k.lower(): v for k, v in headers.items()}["accept-language"] == "ru"
