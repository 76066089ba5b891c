"""auth.users in config.yaml (issue 13): named accounts with a role, each token as its
SHA-256; every mistake named by its key and place."""

from __future__ import annotations

import hashlib

import pytest

from engine.errors import LoadError
from engine.lang.accounts import role_at_least
from engine.lang.config import parse_config

HASH = hashlib.sha256(b"token-1").hexdigest()
HASH2 = hashlib.sha256(b"token-2").hexdigest()


def problems(text: str) -> list[str]:
    with pytest.raises(LoadError) as info:
        parse_config(text, "config.yaml", env={})
    return [str(p) for p in info.value.problems]


def test_accounts_are_read_with_their_roles() -> None:
    config = parse_config(
        f"auth:\n  users:\n    - {{name: ann, token_sha256: {HASH.upper()}, role: marketer}}\n"
        f"    - {{name: bo_b-2, token_sha256: '  {HASH2}  '}}\n",
        env={},
    )
    ann, bob = config.auth.users
    assert (ann.name, ann.token_sha256, ann.role) == ("ann", HASH, "marketer")
    assert (bob.name, bob.token_sha256, bob.role) == ("bo_b-2", HASH2, "viewer")
    assert config.auth.has_accounts and not parse_config("", env={}).auth.has_accounts


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (
            f"{{name: ann, token_sha256: {HASH[:63]}}}",
            "config.yaml:3:19: auth.users.0.token_sha256: must be the SHA-256 of the token "
            "as 64 hex characters, made with `printf %s TOKEN | sha256sum`",
        ),
        (
            "{name: ann, token_sha256: " + "g" * 64 + "}",
            "auth.users.0.token_sha256: must be the SHA-256",
        ),
        (
            f"{{name: 'ann smith', token_sha256: {HASH}}}",
            "auth.users.0.name: 'ann smith' must be 1 to 64 letters, digits, '_' or '-'",
        ),
        (f"{{name: 'a.b', token_sha256: {HASH}}}", "auth.users.0.name: 'a.b' must be"),
        (
            f"{{name: ann, token_sha256: {HASH}, role: owner}}",
            "auth.users.0.role: Input should be 'viewer', 'marketer' or 'admin'",
        ),
        (f"{{token_sha256: {HASH}}}", "auth.users.0.name"),
        (f"{{name: ann, token: {HASH}}}", "auth.users.0"),
    ],
)
def test_a_bad_account_is_named_by_its_key(user: str, expected: str) -> None:
    (problem,) = problems(f"auth:\n  users:\n    - {user}\n")[:1]
    assert expected in problem


def test_names_and_tokens_are_unique_and_admin_is_the_admin_tokens() -> None:
    same_name = problems(
        f"auth:\n  users:\n    - {{name: ann, token_sha256: {HASH}}}\n"
        f"    - {{name: ann, token_sha256: {HASH2}}}\n"
    )
    assert any("auth.users: user 2: the name 'ann' is used twice" in p for p in same_name)
    same_token = problems(
        f"auth:\n  users:\n    - {{name: ann, token_sha256: {HASH}}}\n"
        f"    - {{name: bob, token_sha256: {HASH}}}\n"
    )
    assert any("user 2 ('bob'): the same token as another user" in p for p in same_token)
    admin = problems(
        f"auth:\n  admin_token: secret-1\n  users:\n    - {{name: admin, token_sha256: {HASH}}}\n"
    )
    assert any("the name 'admin' is auth.admin_token's account" in p for p in admin)


def test_roles_are_ordered() -> None:
    assert role_at_least("admin", "marketer") and role_at_least("marketer", "marketer")
    assert role_at_least("marketer", "viewer") and not role_at_least("viewer", "marketer")
    assert not role_at_least("marketer", "admin")
