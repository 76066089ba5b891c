"""Named accounts (config `auth.users`): who holds a token, and what that token may do.

A token is never stored: each account names the SHA-256 of its token (hex), made with
`printf %s TOKEN | sha256sum`. `auth.admin_token` is the account `admin` with role admin.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from engine.lang.sections import Section

Role = Literal["viewer", "marketer", "admin"]
# What each role may do includes what the ones before it may.
ROLES: tuple[Role, ...] = ("viewer", "marketer", "admin")
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def role_at_least(role: str, needed: str) -> bool:
    """Whether `role` may do what `needed` may."""
    return ROLES.index(role) >= ROLES.index(needed)  # type: ignore[arg-type,unused-ignore]


class UserAccount(Section):
    name: str
    token_sha256: str
    role: Role = "viewer"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError(
                f"'{value}' must be 1 to 64 letters, digits, '_' or '-' (it is shown in the "
                "audit log and carried in the session cookie)"
            )
        return value

    @field_validator("token_sha256")
    @classmethod
    def _hash(cls, value: str) -> str:
        text = value.strip().lower()
        if not _HEX64.fullmatch(text):
            raise ValueError(
                "must be the SHA-256 of the token as 64 hex characters, made with "
                "`printf %s TOKEN | sha256sum`"
            )
        return text
