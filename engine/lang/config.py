"""config.yaml: every key defaulted, `${VAR}` / `${VAR:-default}` from the environment."""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from channels.kinds import kind_names
from engine.errors import LoadError, Problem, did_you_mean
from engine.lang.accounts import UserAccount
from engine.lang.durations import parse_duration
from engine.lang.policies_config import PoliciesConfig
from engine.lang.sections import Section
from engine.lang.yamlfile import YDict, YList, load_yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ServerConfig(Section):
    host: str = "0.0.0.0"
    port: int = 8080
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_events: int = 10_000
    max_event_bytes: int = 64 * 1024
    # On SIGTERM, how long provider calls in flight may take to answer before the process
    # exits anyway (an unanswered call may then be repeated after the restart).
    drain_timeout_s: float = Field(default=10.0, ge=0)
    # How long a request's headers, then its body, may take to arrive (a body that does
    # not: 408); also how long an idle keep-alive connection stays open.
    read_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)


TOKEN_RULE = (
    "must be printable ASCII without spaces (a token travels in an HTTP header), "
    "e.g. from `openssl rand -hex 32`"
)


def header_safe(token: str) -> bool:
    """Whether a token can be sent as `Authorization: Bearer <token>`: visible ASCII."""
    return all(33 <= ord(c) <= 126 for c in token)


class AuthConfig(Section):
    ingest_tokens: list[str] = Field(default_factory=list)
    ingest_hmac_secret: str | None = None
    admin_token: str | None = None
    # Bearer token for GET /metrics (what Prometheus sends); unset: the admin token.
    metrics_token: str | None = None
    # Serve open endpoints on a non-loopback server.host anyway (warned at every start).
    allow_open: bool = False
    # Named accounts with a role (engine/lang/accounts.py); admin_token is the account admin.
    users: list[UserAccount] = Field(default_factory=list)

    @field_validator("users")
    @classmethod
    def _unique(cls, value: list[UserAccount]) -> list[UserAccount]:
        seen: set[str] = set()
        hashes: set[str] = set()
        for i, user in enumerate(value):
            if user.name in seen:
                raise ValueError(f"user {i + 1}: the name '{user.name}' is used twice")
            if user.token_sha256 in hashes:
                raise ValueError(f"user {i + 1} ('{user.name}'): the same token as another user")
            seen.add(user.name)
            hashes.add(user.token_sha256)
        return value

    @model_validator(mode="after")
    def _admin_name(self) -> AuthConfig:
        if self.admin_token and any(u.name == "admin" for u in self.users):
            raise ValueError(
                "users: the name 'admin' is auth.admin_token's account; name the user otherwise"
            )
        return self

    @property
    def has_accounts(self) -> bool:
        """Whether admin endpoints and the dashboard need a token (else they are open)."""
        return bool(self.admin_token or self.users)

    @field_validator("ingest_tokens")
    @classmethod
    def _drop_empty(cls, value: list[str]) -> list[str]:
        # "${KASKAD_INGEST_TOKEN}" with the variable unset means no token, not "".
        for i, token in enumerate(value):
            if token and not header_safe(token):
                raise ValueError(f"token {i + 1}: {TOKEN_RULE}")
        return [t for t in value if t]

    @field_validator("admin_token", "metrics_token")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        if value and not header_safe(value):
            raise ValueError(TOKEN_RULE)
        return value


class StorageConfig(Section):
    url: str = "sqlite:///data/kaskad.db"
    event_retention: str = "7d"
    message_retention: str = "400d"
    # PostgreSQL: connections per process, the client's wait for one command, and the
    # server's limit on one statement (statement_timeout on every pool connection).
    pool_size: int = Field(default=10, gt=0)
    command_timeout_s: float = Field(default=30.0, gt=0)
    statement_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("event_retention")
    @classmethod
    def _event_retention(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be a positive duration")
        return value

    @field_validator("message_retention")
    @classmethod
    def _message_retention(cls, value: str) -> str:
        # The engine reads a user's last 30 days of messages (frequency caps, attribution).
        if parse_duration(value) < 30 * 86400:
            raise ValueError("must be a duration of at least 30d")
        return value

    # PostgreSQL: a replica's claims (inbox rows, timers, sends) lapse this long after its
    # last heartbeat (every lease / 4), so a hung replica's work moves on to the others.
    lease: str = "10s"

    @field_validator("lease")
    @classmethod
    def _lease(cls, value: str) -> str:
        if parse_duration(value) < 1:
            raise ValueError("must be a duration of at least 1s")
        return value

    @property
    def lease_s(self) -> float:
        return parse_duration(self.lease)


class RulesConfig(Section):
    path: str = "rules"
    watch: bool = True


class MqttConfig(Section):
    url: str | None = None
    topics: list[str] = Field(default_factory=lambda: ["shop/events/#"])
    qos: Literal[0, 1, 2] = 1
    shared_group: str | None = None
    # A template: {host} (the host name) and {pid} (the process id) make each replica's id
    # its own, so replicas never take each other's session over.
    client_id: str = "kaskad-{host}-{pid}"
    dead_letter_topic: str = "kaskad/dead-letter"

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        try:
            value.format(host="h", pid=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"{value!r}: a template with {{host}} and {{pid}} only ({exc!r})"
            ) from None
        if not value:
            raise ValueError("must not be empty")
        return value

    def resolved_client_id(self, host: str, pid: int) -> str:
        """The client id of this process: the template with its host name and pid."""
        return self.client_id.format(host=host, pid=pid)[:128]

    @field_validator("topics")
    @classmethod
    def _filters(cls, value: list[str]) -> list[str]:
        for i, topic in enumerate(value):
            problem = topic_problem(topic, wildcards=True)
            if problem:
                raise ValueError(f"topic {i + 1} '{topic}' {problem}")
        return value

    @field_validator("dead_letter_topic")
    @classmethod
    def _publishable(cls, value: str) -> str:
        problem = topic_problem(value, wildcards=False)
        if problem:
            raise ValueError(f"'{value}' {problem}")
        return value

    @field_validator("shared_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if not value:  # "${KASKAD_MQTT_GROUP:-}" unset: no shared subscription
            return None
        if any(c in value for c in "/+#\0"):
            raise ValueError(f"'{value}' must be a name without '/', '+', '#' or NUL")
        return value


def topic_problem(topic: str, *, wildcards: bool) -> str | None:
    """Why an MQTT topic (a filter, with `wildcards`) is not one, else None (MQTT 3.1.1,
    4.7): non-empty, no NUL, at most 65535 UTF-8 bytes; a topic to publish to has no '+'
    or '#'; in a filter '#' is last and alone in its level, '+' alone in its level."""
    if not topic:
        return "is empty"
    if "\0" in topic:
        return "holds a NUL character"
    if len(topic.encode("utf-8", "surrogatepass")) > 65535:
        return "is longer than 65535 bytes"
    levels = topic.split("/")
    if not wildcards:
        if "+" in topic or "#" in topic:
            return "holds a wildcard ('+' or '#'): no message can be published to it"
        return None
    for n, level in enumerate(levels):
        if "#" in level and (level != "#" or n != len(levels) - 1):
            return "has '#' other than as its whole last level, e.g. shop/events/#"
        if "+" in level and level != "+":
            return "has '+' other than as a whole level, e.g. shop/+/events"
    return None


class TrackingConfig(Section):
    base_url: str = "http://localhost:8080"
    secret: str | None = None


class LoggingConfig(Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class ChannelConfig(BaseModel):
    """Provider-specific keys are checked by each adapter; common keys here."""

    model_config = ConfigDict(extra="allow")
    provider: str = "sandbox"
    timeout_s: float = 10.0
    rate_per_s: float | None = None
    concurrency: int = 10
    max_retries: int = 5
    # How long a message waits on a provider that fails (an outage pauses the channel and
    # keeps the queue) before it gives up as retries_exhausted and the cascade moves on.
    retry_for: str = "24h"

    @field_validator("retry_for")
    @classmethod
    def _retry_for(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be a positive duration")
        return value

    @property
    def retry_for_s(self) -> float:
        return parse_duration(self.retry_for)


def _default_channels() -> dict[str, ChannelConfig]:
    return {name: ChannelConfig() for name in kind_names()}  # the kinds registered now


class Config(Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    channels: dict[str, ChannelConfig] = Field(default_factory=_default_channels)
    policies: PoliciesConfig = Field(default_factory=PoliciesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("channels")
    @classmethod
    def _known(cls, value: dict[str, ChannelConfig]) -> dict[str, ChannelConfig]:
        for name in value:
            if name not in kind_names():
                raise ValueError(f"unknown channel '{name}'{did_you_mean(name, kind_names())}")
        merged = _default_channels()
        merged.update(value)
        return merged

    @property
    def base_dir(self) -> Path:
        return Path(getattr(self, "_base_dir", "."))


def substitute_env(value: Any, env: dict[str, str] | None = None) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of a YAML structure."""
    environ = os.environ if env is None else env
    if isinstance(value, str):
        return _VAR.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, YDict):
        for key in list(value):
            value[key] = substitute_env(value[key], env)
        return value
    if isinstance(value, dict):
        return {k: substitute_env(v, env) for k, v in value.items()}
    if isinstance(value, YList):
        for i, item in enumerate(value):
            value[i] = substitute_env(item, env)
        return value
    if isinstance(value, list):
        return [substitute_env(v, env) for v in value]
    return value


def _locate(doc: Any, loc: tuple[int | str, ...]) -> tuple[int, int]:
    node, pos = doc, (1, 1)
    for part in loc:
        if isinstance(node, YDict) and isinstance(part, str) and part in node:
            pos = node.where(part, value=False)
            node = node[part]
        elif isinstance(node, YList) and isinstance(part, int) and part < len(node):
            pos = node.where(part)
            node = node[part]
        else:
            break
    return pos


# A further check of the raw config (after ${VAR} substitution), such as the channel
# adapters' own keys: (dotted key, message) pairs, located in the file like the model's errors.
ConfigCheck = Callable[[Any], list[tuple[str, str]]]


def parse_config(
    text: str,
    path: str = "config.yaml",
    env: dict[str, str] | None = None,
    check: ConfigCheck | None = None,
) -> Config:
    """The config in `text`; LoadError with every problem (the model's and `check`'s) at once."""
    doc = load_yaml(text, path) if text.strip() else None
    if doc is None:
        doc = YDict()
    if not isinstance(doc, YDict):
        raise LoadError([Problem(path, 1, 1, "config must be a mapping of sections")])
    doc = substitute_env(doc, env)
    problems: list[Problem] = []
    config: Config | None = None
    try:
        config = Config.model_validate(doc)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
            line, col = _locate(doc, loc)
            dotted = ".".join(str(p) for p in loc)
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                parent = ".".join(str(p) for p in loc[:-1]) or "config"
                fields = _fields_at(loc[:-1])
                message = f"unknown key in {parent}{did_you_mean(str(loc[-1]), fields)}"
            problems.append(Problem(path, line, col, f"{dotted}: {message}"))
    for dotted, message in check(doc) if check is not None else ():
        line, col = _locate(doc, tuple(dotted.split(".")))
        problems.append(Problem(path, line, col, f"{dotted}: {message}"))
    if problems or config is None:
        raise LoadError(sorted(problems))
    return config


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model at `loc` takes (through models, list items and dict values)."""
    model: Any = Config
    for part in loc:
        model = _unwrap(model)
        origin, args = typing.get_origin(model), typing.get_args(model)
        if hasattr(model, "model_fields"):
            field = model.model_fields.get(str(part))
            if field is None:
                return []
            model = field.annotation
        elif origin in (list, tuple) and isinstance(part, int) and args:
            model = args[0]
        elif origin is dict and len(args) == 2:
            model = args[1]
        else:
            return []
    fields = getattr(_unwrap(model), "model_fields", {})
    return [f.alias or name for name, f in fields.items()]


def _unwrap(model: Any) -> Any:
    """`X | None` (or any union holding one model or container) -> X."""
    args = typing.get_args(model)
    if typing.get_origin(model) in (typing.Union, types.UnionType):
        useful = [a for a in args if a is not type(None)]
        return useful[0] if len(useful) == 1 else model
    return model


def load_config(path: str | Path | None = None, check: ConfigCheck | None = None) -> Config:
    """The config at `path`, else $KASKAD_CONFIG, else ./config.yaml if present, else defaults
    (`check` runs on a file's contents, see parse_config)."""
    chosen = path or os.environ.get("KASKAD_CONFIG")
    if chosen is None and Path("config.yaml").is_file():
        chosen = "config.yaml"
    if chosen is None:
        return Config()
    file = Path(chosen)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise LoadError([Problem(str(chosen), 1, 1, f"cannot read config: {exc}")]) from None
    config = parse_config(text, str(chosen), check=check)
    object.__setattr__(config, "_base_dir", str(file.parent))
    return config
