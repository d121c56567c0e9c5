"""`kalkan-filter` as a person runs it (a real subprocess)."""

import json
import subprocess
import sys

from policy_server.protocol import PolicyBundle


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "filters.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_canonicalize_arguments_and_stdin():
    out = run("canonicalize", "HTTP://School.KG./a/../b", "http://0x7f.1/")
    assert out.stdout.splitlines() == ["http://school.kg/b", "http://127.0.0.1/"]
    out = run("canonicalize", stdin="www.Example.kg\n\nhttp://a.kg//x\n")
    assert out.stdout.splitlines() == ["http://www.example.kg/", "http://a.kg/x"]


def test_compile_info_check(tmp_path):
    (tmp_path / "games.txt").write_text("games.example\nbad line here\nplay.example/flash\n")
    (tmp_path / "hosts").write_text("0.0.0.0 casino.example\n")
    out = tmp_path / "t.kidx"
    res = run("compile", "-o", str(out), "--list", f"games={tmp_path / 'games.txt'}",
              "--list", f"gambling={tmp_path / 'hosts'}", "--progress", "always")
    assert res.returncode == 0, res.stderr
    assert f"{tmp_path / 'games.txt'}:2:" in res.stderr and "1 bad lines skipped" in res.stdout
    assert "100.0%" in res.stderr  # the progress bar reached the end
    info = json.loads(run("info", str(out), "--verify", "--json").stdout)
    assert info["entries"] == 4 and info["verified"] is True

    bundle = PolicyBundle.model_validate({"filtering": {"unsupervised": {"student": "open"},
                                                        "site_categories": {"own.example": ["games"]}}})
    policy = tmp_path / "policy.json"
    policy.write_text(bundle.model_dump_json())
    res = run("check", "--index", str(out), "--policy", str(policy), "--group", "student", "--json",
              "--at", "2025-03-03T10:15", stdin="https://casino.example/\nhttp://own.example/\nhttp://ok.example/\n")
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(v["action"], v["rule"]) for v in lines] == [("block", "category"), ("block", "category"),
                                                         ("allow", "default.allow")]
    res = run("check", "--index", str(out), "--lang", "ky", "--group", "teacher", "https://casino.example/")
    assert res.stdout.startswith("BLOCK") and "Кумар оюндары" in res.stdout


def test_clear_errors():
    res = run("check", "--index", "/nonexistent.kidx", "http://x.kg/")
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = run("compile", "-o", "/tmp/never.kidx", "--list", "nonsense=/etc/hostname")
    assert res.returncode != 0 and "unknown category 'nonsense'" in res.stderr
    res = run("check", "--at", "yesterday", "http://x.kg/")
    assert res.returncode != 0 and "--at" in res.stderr
