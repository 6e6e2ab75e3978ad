"""Importing an htpasswd file: every line becomes a consumer that logs in with its old password."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from consumer_auth import Allow, ConfigError, Gateway, RequestFacts, cli
from consumer_auth.htpasswd import consumers_document, parse_htpasswd, read_htpasswd
from proxy_servers import CONSUMER_AUTH
from support import basic

# Made with Apache htpasswd 2.4 (-m, the default; -s; -B), openssl passwd -6 and -5, and nginx's {PLAIN};
# then htpasswd -d (DES crypt) and openssl passwd -1 (MD5-crypt), which are not supported here.
FILE = """\
# users of the old nginx
alex:$apr1$70iJyua7$gMCnDoXYSPfM9sURRcgI3.
bob:{SHA}RQRO0i/ARBGVPhWCuk1XtFj3OEU=

ann@example.com:$2y$05$e9ENqlaIJqas5L4yTVt3MOCFk3.0Gt25/tj9OSsiCombZUauYCrsq
ann_example_com:$apr1$ndYSUuDi$gCmri1duRbALexCsnc69Q0
carol:$6$ugsjr7t2KvEybH4s$Oxr6Kh.XJ9cCMugW.OshO4wkKorPWXwOYGSg.UZc0O3qn5rqEdmTZG8hjs5ywfCKSC/jccKeA78kJzjmtUW8L.
dave:$5$8tkPvr4tqmngHXXY$7ff2pBj6FGzNlBuFiFsFR9T7YauocPbeFBFuDBOJKy5
frank:{PLAIN}pässwörd:with colon
"""
UNSUPPORTED = """\
eve:TJ91b34u7uQk2
x:$1$fQXvKx0Z$/WZZC30d83FNyJLg.JmKV1
"""
PASSWORDS = {
    "alex": "123456",
    "bob": "pässwörd:with colon",
    "ann@example.com": "123456",
    "ann_example_com": "123456",
    "carol": "123456",
    "dave": "123456",
    "frank": "pässwörd:with colon",
}


def routes() -> list[dict[str, object]]:
    return [{"uri": "/*", "plugins": {"basic-auth": {}}}]


def test_every_user_logs_in_with_the_old_password() -> None:
    document = consumers_document(parse_htpasswd(FILE, "users"))
    names = [c["username"] for c in document["consumers"]]
    assert names == ["alex", "bob", "ann_example_com", "ann_example_com-2", "carol", "dave", "frank"]
    gateway = Gateway.from_dict({**document, "routes": routes()})
    for login, password in PASSWORDS.items():
        decision = gateway.decide_now(RequestFacts("GET", "/x", None, (basic(login, password),)))
        assert isinstance(decision, Allow), login
        wrong = gateway.decide_now(RequestFacts("GET", "/x", None, (basic(login, password + "!"),)))
        assert not isinstance(wrong, Allow)


def test_entries_keep_their_lines_and_hide_their_hashes() -> None:
    entries = parse_htpasswd(FILE, "users")
    assert [(e.login, e.line) for e in entries] == [
        ("alex", 2),
        ("bob", 3),
        ("ann@example.com", 5),
        ("ann_example_com", 6),
        ("carol", 7),
        ("dave", 8),
        ("frank", 9),
    ]
    assert "apr1" not in repr(entries[0])


def test_an_unsupported_hash_names_the_line_not_the_hash() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_htpasswd(FILE + UNSUPPORTED, "users")
    assert str(caught.value).startswith("users:10: user 'eve': unsupported hash format")
    assert "TJ91b34u7uQk2" not in str(caught.value)


def test_unsupported_lines_can_be_skipped_with_a_note() -> None:
    notes: list[tuple[str, str]] = []
    entries = parse_htpasswd(
        FILE + UNSUPPORTED, "users", on_skip=lambda place, why: notes.append((place, why))
    )
    assert [e.login for e in entries] == list(PASSWORDS)
    assert [place for place, _ in notes] == ["users:10", "users:11"]
    assert notes[1][1].startswith("skipped user 'x': unsupported hash format")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("alex\n", "users:1: expected 'user:hash'", id="no-colon"),
        pytest.param(":{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs=\n", "users:1: expected 'user:hash'", id="no-user"),
        pytest.param("alex:\n", "users:1: expected 'user:hash'", id="no-hash"),
        pytest.param(
            "a:{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs=\n\na:{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs=\n",
            "users:3: duplicate user 'a' (also on line 1)",
            id="duplicate",
        ),
        pytest.param("a:{SHA}abc\n", "users:1: user 'a': not a valid {SHA} hash", id="malformed"),
    ],
)
def test_bad_lines(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_htpasswd(text, "users")
    assert str(caught.value).startswith(message)


def test_read_htpasswd_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "users.htpasswd"
    path.write_text(FILE, encoding="utf-8")
    assert len(read_htpasswd(path)) == 7
    path.write_bytes(b"alex:\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_htpasswd(path)
    with pytest.raises(ConfigError, match="cannot read the file"):
        read_htpasswd(tmp_path / "missing")


def test_import_htpasswd_prints_a_configuration_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.htpasswd"
    path.write_text(FILE + UNSUPPORTED, encoding="utf-8")
    assert cli.main(["import-htpasswd", str(path)]) == 1
    assert "users.htpasswd:10: user 'eve': unsupported hash format" in capsys.readouterr().err
    assert cli.main(["import-htpasswd", str(path), "--skip-unsupported"]) == 0
    captured = capsys.readouterr()
    assert "skipped user 'x'" in captured.err
    config = tmp_path / "gateway.yaml"
    config.write_text(captured.out, encoding="utf-8")
    gateway = Gateway.from_file(config)
    assert [c.username for c in gateway.consumers] == [
        "alex", "bob", "ann_example_com", "ann_example_com-2", "carol", "dave", "frank"
    ]  # fmt: skip
    assert cli.main(["import-htpasswd", str(path), "--skip-unsupported", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == yaml.safe_load(captured.out)


def test_import_htpasswd_runs_as_a_command(tmp_path: Path) -> None:
    path = tmp_path / "users.htpasswd"
    path.write_text(FILE, encoding="utf-8")
    result = subprocess.run(
        [CONSUMER_AUTH, "import-htpasswd", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    consumers = json.loads(result.stdout)["consumers"]
    hashes = {c["username"]: c["plugins"]["basic-auth"]["password_hash"] for c in consumers}
    assert hashes["carol"].startswith("$6$")
    assert hashes["dave"].startswith("$5$")
    assert hashes["frank"] == "{PLAIN}pässwörd:with colon"
