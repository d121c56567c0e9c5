"""Quarantine and restore, and the `kalkan-agent av` commands."""

from __future__ import annotations

import json
import os
import stat

import pytest

from agent.antivirus.quarantine import Quarantine, QuarantineError
from tests.support.clamd import EICAR


def test_quarantine_moves_to_root_only_folder_and_restores(tmp_path):
    victim = tmp_path / "Downloads" / "game.exe"
    victim.parent.mkdir()
    victim.write_bytes(EICAR)
    victim.chmod(0o751)
    os.utime(victim, (1_700_000_000, 1_700_000_000))
    quarantine = Quarantine(tmp_path / "q")
    entry = quarantine.quarantine(victim, signature="Kalkan.Test.Eicar", source="download")
    assert not victim.exists()
    assert stat.S_IMODE((tmp_path / "q").stat().st_mode) == 0o700
    stored = tmp_path / "q" / f"{entry.id}.bin"
    assert stored.read_bytes() == EICAR and stat.S_IMODE(stored.stat().st_mode) == 0o400
    meta = json.loads((tmp_path / "q" / f"{entry.id}.json").read_text())
    assert meta["original_path"] == str(victim) and meta["signature"] == "Kalkan.Test.Eicar"
    assert [e.id for e in quarantine.list()] == [entry.id]

    restored = quarantine.restore(entry.id, by="responsible")
    assert restored == victim and victim.read_bytes() == EICAR
    assert stat.S_IMODE(victim.stat().st_mode) == 0o751 and victim.stat().st_mtime == 1_700_000_000
    assert quarantine.list() == []
    audit = [json.loads(line) for line in (tmp_path / "q" / "restored.jsonl").read_text().splitlines()]
    assert audit[0]["id"] == entry.id and audit[0]["by"] == "responsible"
    # the responsible person said it is a false positive: it is not quarantined again
    assert quarantine.quarantine(victim, signature="Kalkan.Test.Eicar") is None
    assert victim.exists()


def test_restore_refuses_to_overwrite_and_names_the_fix(tmp_path):
    victim = tmp_path / "a.exe"
    victim.write_bytes(EICAR)
    quarantine = Quarantine(tmp_path / "q")
    entry = quarantine.quarantine(victim, signature="X")
    victim.write_text("a new file with the same name")
    with pytest.raises(QuarantineError, match="--to NEW_PATH"):
        quarantine.restore(entry.id)
    assert victim.read_text() == "a new file with the same name"
    other = quarantine.restore(entry.id, to=tmp_path / "b.exe")
    assert other.read_bytes() == EICAR
    with pytest.raises(QuarantineError, match="quarantine list"):
        quarantine.restore("../../etc/passwd")


def test_cli_lists_and_restores(tmp_path, capsys):
    from agent.cli import main

    folder = tmp_path / "state" / "collectors" / "antivirus" / "quarantine"
    victim = tmp_path / "x.exe"
    victim.write_bytes(EICAR)
    entry = Quarantine(folder).quarantine(victim, signature="Kalkan.Test.Eicar")
    assert main(["av", "quarantine", "list", "--state-dir", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out
    assert entry.id in out and str(victim) in out and "Kalkan.Test.Eicar" in out
    assert main(["av", "restore", entry.id, "--state-dir", str(tmp_path / "state")]) == 0
    assert victim.exists()
    assert main(["av", "restore", entry.id, "--state-dir", str(tmp_path / "state")]) == 1
    assert "quarantine list" in capsys.readouterr().err


def test_cli_scan_now_writes_proof_to_the_outbox(clamd, tmp_path, capsys):
    from agent.cli import main
    from agent.outbox import Outbox

    folder = tmp_path / "stick"
    folder.mkdir()
    (folder / "ok.txt").write_text("fine")
    (folder / "bad.com").write_bytes(EICAR)
    state = tmp_path / "state"
    code = main(
        ["av", "scan-now", str(folder), "--socket", str(clamd.socket_path), "--state-dir", str(state)]
    )
    assert code == 3, "exit code 3: threats found"
    assert not (folder / "bad.com").exists() and (folder / "ok.txt").exists()
    with Outbox(state / "outbox.sqlite") as outbox:
        types = [event.type for event in outbox.peek_batch()]
    assert types == ["av.scan.started", "av.threat", "av.scan.completed"]
    assert "Kalkan.Test.Eicar" in capsys.readouterr().out
    assert (
        main(
            [
                "av",
                "scan-now",
                str(tmp_path / "nope"),
                "--socket",
                str(clamd.socket_path),
                "--state-dir",
                str(state),
            ]
        )
        == 1
    )
