"""What kaskad knows about a kind of channel, declared as data (apprise's NotifyBase):
where its addresses are on a profile, what its template block holds, the limits a rendered
message must keep, and what a marketing message of the kind gets.

The engine reads all of it from the registry (channels/registry.py); a kind imports nothing
from the engine, so the engine hands in what only it knows (the tracker's URLs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

# How the template loader compiles a block's field, and how `kaskad schema` describes it:
# text: a Jinja text template; html: the same, autoescaped, or the name of an .html file
# beside the template; mapping: a structure of templates (JSON-like); text_list: a list of
# text templates; choice: one of fixed words; flag: true or false.
FieldKind = Literal["text", "html", "mapping", "text_list", "choice", "flag"]


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a template block."""

    kind: FieldKind = "text"
    required: bool = False
    choices: tuple[str, ...] = ()  # the words a `choice` takes


def text(*, required: bool = False) -> Field:
    return Field("text", required)


def html() -> Field:
    return Field("html")


def mapping(*, required: bool = False) -> Field:
    return Field("mapping", required)


def text_list() -> Field:
    return Field("text_list")


def choice(*words: str) -> Field:
    return Field("choice", choices=words)


def flag() -> Field:
    return Field("flag")


class LimitError(ValueError):
    """A rendered message breaks its kind's limits; the text names the field and the limit."""


@dataclass(frozen=True, slots=True)
class MarketingLinks:
    """The engine's signed tracking URLs for one marketing message."""

    open_url: str  # the open pixel's image
    unsubscribe_url: str  # one click (RFC 8058 POST) or a visit unsubscribes


class ChannelKind:
    """A kind of channel (email, sms...): subclass it, set the class data, register an
    instance (channels/registry.py register_kind). Providers of the kind are registered apart
    (registry.register) and chosen per channel in config.yaml."""

    name: ClassVar[str]
    # Profile keys holding the address, tried in order; a dotted key reads a nested mapping
    # ("attributes.loft"). The first one set (not null, not "") is the address.
    address_from: ClassVar[tuple[str, ...]] = ()
    # The key holds a list and each entry is an address (a user's devices, browsers).
    many: ClassVar[bool] = False
    # What the list holds, for the error when it is not a list ("must be a list of strings").
    list_of: ClassVar[str] = "strings"
    # Marketing messages need the user's consent for the kind (SPEC 3).
    needs_consent: ClassVar[bool] = True
    # The template block: its keys and what each holds.
    fields: ClassVar[Mapping[str, Field]] = {}
    # A block needs at least one of these keys (email: html or text).
    needs_any: ClassVar[tuple[str, ...]] = ()
    # Limits on the rendered message, checked before it goes out (a break is a
    # template_error): characters of a text field, bytes of the whole payload.
    text_chars: ClassVar[Mapping[str, tuple[int, int]]] = {}
    max_payload_bytes: ClassVar[int | None] = None

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.fields)

    @property
    def required(self) -> frozenset[str]:
        return frozenset(k for k, f in self.fields.items() if f.required)

    def addresses(self, profile: Mapping[str, Any]) -> list[Any]:
        """The addresses the profile holds for this kind, invalid ones included."""
        if self.many:
            return list(_lookup(profile, self.address_from[0]) or []) if self.address_from else []
        for key in self.address_from:
            value = _lookup(profile, key)
            if value not in (None, ""):
                return [value]
        return []

    def address_key(self, address: Any) -> str:
        """A stable text for an address: what marks it invalid on the profile."""
        return str(address)

    def check_address(self, value: Any) -> tuple[str, str] | None:
        """What is wrong with a profile's value of an `address_from` key (not null), as
        (a suffix of the field's path, the problem), else None. A profile.updated event with
        a wrong one is refused at ingest."""
        if self.many:
            if not isinstance(value, list):
                return "", f"must be a list of {self.list_of}"
            for i, entry in enumerate(value):
                problem = self.check_one(entry)
                if problem:
                    return f"[{i}]", problem
            return None
        problem = self.check_one(value)
        return ("", problem) if problem else None

    def check_one(self, address: Any) -> str | None:
        """What is wrong with one address, else None: a string by default."""
        if isinstance(address, str):
            return None
        return "must be a string" if self.many else "must be a string or null"

    def profile_keys(self) -> tuple[str, ...]:
        """The top-level profile keys this kind reads its addresses from (a dotted key lives
        inside another one, e.g. the shop's own attributes)."""
        return tuple(k for k in self.address_from if "." not in k)

    def check_constant(self, key: str, value: str) -> str | None:
        """What is wrong with a field whose text is fixed at load time, said after the
        field's name ("is 11 GSM-7 segments, over 10"), else None."""
        return None

    def check_payload(self, payload: dict[str, Any]) -> None:
        """LimitError when the rendered payload breaks a limit; a kind may also add what its
        providers need to the payload (SMS: the segment count and encoding)."""
        for key, (low, high) in self.text_chars.items():
            if key in payload and not low <= len(str(payload[key])) <= high:
                raise LimitError(
                    f"{self.name}.{key} must be {low}-{high} characters, "
                    f"rendered {len(str(payload[key]))}"
                )
        if self.max_payload_bytes is not None:
            size = len(str(payload).encode())
            if size > self.max_payload_bytes:
                raise LimitError(
                    f"{self.name} payload is {size} bytes, over {self.max_payload_bytes}"
                )

    def marketing(self, payload: dict[str, Any], links: MarketingLinks) -> dict[str, str]:
        """What a marketing message of this kind gets: changes to its rendered payload, and
        the headers returned (for the provider to send along)."""
        return {}


def _lookup(profile: Mapping[str, Any], key: str) -> Any:
    value: Any = profile
    for part in key.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
