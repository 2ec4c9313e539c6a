"""Secrets never reach a log line, an error message or a summary."""

from __future__ import annotations

import pytest

from ghstream.logs import redact

_FAKE_TOKEN = "gh" + "p_" + "x" * 30


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        pytest.param("postgresql://ghstream:pw@127.0.0.1:5432/ghstream", "pw", id="url-password"),
        pytest.param("postgresql://x:p@ss@127.0.0.1:1/db: refused", "p@ss", id="password-with-at"),
        pytest.param("postgresql://127.0.0.1/db?password=qsecret&user=x", "qsecret", id="query"),
        pytest.param("host=h user=x password=kvsecret dbname=d", "kvsecret", id="key-value"),
        pytest.param("host=h password='two words' dbname=d", "two words", id="quoted-key-value"),
        pytest.param("https://h/x.json.gz?token=abc123&sig=plainsecret", "plainsecret", id="sig"),
        # Built here, so no token-shaped literal is committed (it is no real token).
        pytest.param(f"token {_FAKE_TOKEN} refused", _FAKE_TOKEN, id="github-token"),
        pytest.param("Authorization: Bearer s3cr3t-value", "s3cr3t", id="header"),
    ],
)
def test_secrets_are_replaced(text: str, secret: str) -> None:
    cleaned = redact(text)

    assert secret not in cleaned
    assert "***" in cleaned


def test_text_around_a_secret_is_kept() -> None:
    assert (
        redact("https://u:pw@h/x?sig=abc: ConnectError")
        == "https://u:***@h/x?sig=***: ConnectError"
    )
    assert redact("db?password=p&user=x") == "db?password=***&user=x"
    assert (
        redact("https://a:b@h/x and https://c:d@k/y") == "https://a:***@h/x and https://c:***@k/y"
    )
    assert redact("mail a@b.c, see http://h/p@x") == "mail a@b.c, see http://h/p@x"
    # redacting twice changes nothing (the log filter sees already-cleaned messages)
    once = redact("https://u:pw@h/x?sig=abc: e")
    assert redact(once) == once
