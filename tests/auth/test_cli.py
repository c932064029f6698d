"""Administration commands: users, clients, first-start administrator, demo users."""

from __future__ import annotations

from songkhoe.auth import Auth
from songkhoe.auth.demo import demo_users
from songkhoe.cli import main

from .conftest import PASSWORD


def test_user_commands(store, db_url, capsys) -> None:
    assert main(["user", "add", "--db", db_url, "--username", "ytx", "--password", PASSWORD,
                 "--role", "health_worker", "--org", "tyt-00004"]) == 0
    assert main(["user", "add", "--db", db_url, "--username", "ytx", "--password", PASSWORD,
                 "--role", "health_worker"]) == 2  # exists
    assert main(["user", "lock", "--db", db_url, "--username", "ytx"]) == 0
    assert main(["user", "list", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "ytx\thealth_worker\ttyt-00004\tlocked" in out
    assert main(["user", "unlock", "--db", db_url, "--username", "ytx"]) == 0
    assert main(["user", "passwd", "--db", db_url, "--username", "ytx"]) == 0
    one_time = capsys.readouterr().out.split("one-time password for ytx: ")[1].split()[0]
    user = Auth(store).identities.authenticate("ytx", one_time)
    assert user.must_change
    assert main(["user", "passwd", "--db", db_url, "--username", "nobody",
                 "--password", PASSWORD]) == 2


def test_client_add(store, db_url, capsys) -> None:
    assert main(["client", "add", "--db", db_url, "--client-id", "rpt", "--generate-secret",
                 "--role", "system", "--org", "so-04", "--scope", "system/*.rs"]) == 0
    secret = capsys.readouterr().out.split("client secret (shown only now): ")[1].strip()
    auth = Auth(store)
    client = auth.identities.client("rpt")
    assert client is not None and auth.identities.check_client_secret(client, secret)
    assert main(["keys", "rotate", "--db", db_url]) == 0


def test_demo_users_are_created_then_reset(store) -> None:
    auth = Auth(store)
    first = demo_users(auth, 4)
    assert [(u, r) for u, _, r, _ in first] == [("ytx-demo", "health_worker"),
                                                ("bacsi-demo", "doctor"),
                                                ("quanly-demo", "programme_manager")]
    assert first[2][3] == "so-04" and first[0][3].startswith("tyt-")
    for username, password, _, _ in first:
        auth.identities.authenticate(username, password)
    second = demo_users(auth, 4)
    assert second[0][1] != first[0][1]
    auth.identities.authenticate("ytx-demo", second[0][1])


def test_serve_first_start_prints_a_one_time_admin_password_once(tmp_path, monkeypatch,
                                                                  capsys) -> None:
    import uvicorn

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["serve", "--db", db, "--demo", "--demo-people", "5", "--demo-communes", "1",
                 "--demo-province", "4"]) == 0
    out = capsys.readouterr().out
    assert "one-time password" in out and "bacsi-demo" in out and "quanly-demo" in out
    assert apps[-1].state.auth is not None  # security on by default
    assert main(["serve", "--db", db]) == 0
    assert "one-time password" not in capsys.readouterr().out
    assert main(["serve", "--db", db, "--insecure-no-auth"]) == 0
    assert "security is OFF" in capsys.readouterr().out and apps[-1].state.auth is None
