"""Configuration from the environment, validated once at start-up.

`VARIABLES` is the single list of every setting: its name, default and meaning. `load_settings`
reads defaults from it, `config/cm-api.env.example` and the README table are checked against it
by the tests, so the three cannot drift apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

T = TypeVar("T")

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# RFC 6750's b64token, at least 16 characters so that a guessable word is not a token.
TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{16,}=*")
ORIGIN = re.compile(r"https?://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable and what was expected."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class Secret:
    """A string that never shows itself in `repr`, `str`, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None  # None: required
    meaning: str


VARIABLES: Final[tuple[Variable, ...]] = (
    Variable("DB_HOST", None, "MySQL/MariaDB host name or address (required)"),
    Variable("DB_PORT", "3306", "MySQL/MariaDB TCP port (1-65535)"),
    Variable("DB_USER", None, "database user (required)"),
    Variable("DB_PASSWORD", "", "database password; empty means no password"),
    Variable(
        "DB_PASSWORD_FILE",
        "",
        "file holding the password (a mounted secret); excludes DB_PASSWORD; "
        "one trailing newline is ignored",
    ),
    Variable("DB_NAME", None, "database (schema) holding the exposed tables (required)"),
    Variable(
        "DB_CONNECTION_TIMEOUT",
        "5",
        "seconds to open one database connection, handshake included",
    ),
    Variable(
        "DB_CONNECT_RETRIES",
        "5",
        "extra connection attempts at start-up after the first one fails (0 = try once)",
    ),
    Variable("DB_CONNECT_RETRY_DELAY", "2", "seconds between start-up connection attempts"),
    Variable("DB_POOL_SIZE", "8", "maximum connections the process holds (1-1000)"),
    Variable(
        "DB_POOL_MIN_SIZE",
        "2",
        "connections opened at start-up and kept warm (0 to DB_POOL_SIZE; unset: 2, or "
        "DB_POOL_SIZE if smaller)",
    ),
    Variable(
        "DB_POOL_RECYCLE_SECONDS",
        "1800",
        "a connection older than this is closed when it returns to the pool or is found idle, "
        "and replaced on demand (keep it below the server's wait_timeout)",
    ),
    Variable(
        "DB_ACQUIRE_TIMEOUT",
        "2",
        "seconds a request waits for a free pooled connection before answering 503",
    ),
    Variable(
        "DB_QUERY_TIMEOUT",
        "5",
        "seconds one query may run before it is abandoned (503) and its connection closed",
    ),
    Variable(
        "DB_CHECK_INTERVAL",
        "5",
        "seconds without any statement, connection attempt or ping after which a background "
        "ping checks the database (cmapi_db_up, /readyz?verbose); 0 turns the check off",
    ),
    Variable("HTTP_HOST", "0.0.0.0", "address the HTTP server listens on"),
    Variable("HTTP_PORT", "8080", "HTTP port (1-65535)"),
    Variable("MAX_PAGE_SIZE", "1000", "largest accepted ?limit= on list routes"),
    Variable(
        "RESOURCES",
        "acc,user",
        "comma-separated tables served as /<table>/ (each needs a one-column primary key)",
    ),
    Variable(
        "EXPOSE_SECRET_COLUMNS",
        "",
        "comma-separated table.column names served although they look secret "
        "(password, passwd, secret, token, salt, hash, api_key)",
    ),
    Variable(
        "CACHE_TTL_SECONDS",
        "5",
        "seconds a loaded answer is served without asking the database; 0 stores nothing "
        "(concurrent identical requests still share one query)",
    ),
    Variable(
        "CACHE_STALE_WHILE_REVALIDATE_SECONDS",
        "10",
        "after the TTL, seconds an answer is still served at once while one background query "
        "refreshes it; answers are at most TTL + this old while the database is healthy",
    ),
    Variable(
        "CACHE_STALE_IF_ERROR_SECONDS",
        "300",
        "after the TTL, seconds the last good answer is served (X-Cache: STALE) while the "
        "database fails; past that, 503",
    ),
    Variable(
        "CACHE_MAX_BYTES",
        "67108864",
        "bytes of cached bodies (plain and gzip) kept in memory; least recently used go first",
    ),
    Variable(
        "API_TOKENS_FILE",
        "",
        "file of bearer tokens (one per line, at least 16 characters, # comments) that the data "
        "routes and /openapi.json require; empty: those routes are open (a warning at start-up "
        "when HTTP_HOST is not a loopback address); read at start-up",
    ),
    Variable(
        "METRICS_TOKENS_FILE",
        "",
        "file of bearer tokens for /metrics, same format; empty: /metrics is open",
    ),
    Variable(
        "CORS_ALLOWED_ORIGINS",
        "",
        "comma-separated origins (https://dash.example.com) whose pages may read the data "
        "routes, or * for any; empty: no CORS headers, preflights get 405",
    ),
    Variable(
        "CORS_ALLOW_CREDENTIALS",
        "false",
        "true lets those pages send cookies or HTTP authentication (not with *); bearer "
        "tokens in an Authorization header need no credentials mode",
    ),
    Variable(
        "LOG_LEVEL",
        "info",
        "debug, info, warning or error; info writes one line per request"
        " (probes and scrapes only at debug)",
    ),
    Variable(
        "LOG_FORMAT",
        "auto",
        "json, console, or auto (console on a terminal, JSON otherwise)",
    ),
    Variable(
        "SHUTDOWN_DELAY_SECONDS",
        "5",
        "after SIGTERM, seconds the server goes on serving while /readyz answers 503, so load "
        "balancers stop sending traffic before the listener closes",
    ),
    Variable(
        "SHUTDOWN_GRACE_SECONDS",
        "20",
        "after that delay, seconds requests in flight get to finish before they are cut; "
        "the process exits within delay + grace + 5 s",
    ),
)

_BY_NAME: Final[Mapping[str, Variable]] = {v.name: v for v in VARIABLES}
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("auto", "json", "console")


@dataclass(frozen=True, kw_only=True)
class Settings:
    db_host: str
    db_port: int
    db_user: str
    db_password: Secret
    db_name: str
    db_connection_timeout: float
    db_connect_retries: int
    db_connect_retry_delay: float
    db_pool_size: int
    db_pool_min_size: int
    db_pool_recycle_seconds: float
    db_acquire_timeout: float
    db_query_timeout: float
    db_check_interval: float
    http_host: str
    http_port: int
    max_page_size: int
    resources: tuple[str, ...]
    expose_secret_columns: frozenset[tuple[str, str]]
    cache_ttl_seconds: float
    cache_stale_while_revalidate_seconds: float
    cache_stale_if_error_seconds: float
    cache_max_bytes: int
    api_tokens: tuple[Secret, ...]
    metrics_tokens: tuple[Secret, ...]
    cors_allowed_origins: frozenset[str]
    cors_allow_credentials: bool
    log_level: str
    log_format: str
    shutdown_delay_seconds: float
    shutdown_grace_seconds: float

    def public(self) -> dict[str, object]:
        """Every setting for the start-up log line, secrets redacted (set or not is shown)."""
        return {name: _public_value(value) for name, value in self.__dict__.items()}


def _public_value(value: object) -> object:
    if isinstance(value, Secret):
        return "<redacted>" if value.reveal() else ""
    if isinstance(value, tuple) and value and isinstance(value[0], Secret):
        return f"{len(value)} token(s)"
    if isinstance(value, frozenset):
        return sorted(v if isinstance(v, str) else ".".join(v) for v in value)
    return value


class _Reader:
    """Reads one environment mapping, applying the defaults of `VARIABLES`."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def is_set(self, name: str) -> bool:
        """Whether `name` has a value (empty or blank counts as unset)."""
        return (self._env.get(name) or "").strip() != ""

    def raw(self, name: str) -> str:
        var = _BY_NAME[name]
        if not self.is_set(name):
            if var.default is None:
                raise SettingsError(name, f"is required ({var.meaning})")
            return var.default
        return self._env[name].strip()

    def integer(self, name: str, low: int, high: int) -> int:
        return self._bounded(name, low, high, int, "an integer")

    def number(self, name: str, low: float, high: float) -> float:
        return self._bounded(name, low, high, float, "a number of seconds")

    def _bounded(self, name: str, low: T, high: T, parse: Callable[[str], T], kind: str) -> T:
        raw = self.raw(name)
        expected = f"expected {kind} from {low} to {high}, got {raw!r}"
        try:
            value = parse(raw)
        except ValueError:
            raise SettingsError(name, expected) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(name, expected)
        if not low <= value <= high:  # type: ignore[operator]
            raise SettingsError(name, expected)
        return value

    def boolean(self, name: str) -> bool:
        raw = self.raw(name).lower()
        if raw in ("true", "yes", "1", "on"):
            return True
        if raw in ("false", "no", "0", "off"):
            return False
        raise SettingsError(name, f"expected true or false, got {raw!r}")

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        raw = self.raw(name).lower()
        if raw not in choices:
            raise SettingsError(name, f"expected one of {', '.join(choices)}, got {raw!r}")
        return raw


def _read_file(variable: str, path: str) -> str:
    """The UTF-8 text of the file `variable` names; a SettingsError saying why it cannot be
    read (never its content)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SettingsError(variable, f"cannot read {path!r}: {reason}") from None


def _password(env: Mapping[str, str]) -> Secret:
    path = env.get("DB_PASSWORD_FILE", "").strip()
    if not path:
        # Not stripped: a password may legitimately start or end with a space.
        return Secret(env.get("DB_PASSWORD", ""))
    if env.get("DB_PASSWORD", ""):
        raise SettingsError(
            "DB_PASSWORD_FILE", "set either DB_PASSWORD or DB_PASSWORD_FILE, not both"
        )
    content = _read_file("DB_PASSWORD_FILE", path)
    # Secrets written with `echo` end in a newline that is not part of the password.
    return Secret(content.removesuffix("\n").removesuffix("\r"))


def _tokens(reader: _Reader, name: str) -> tuple[Secret, ...]:
    """The bearer tokens in the file `name` names; none when it is unset."""
    if not reader.is_set(name):
        return ()
    path = reader.raw(name)
    lines = _read_file(name, path).splitlines()
    tokens: dict[str, None] = {}
    for number, line in enumerate(lines, 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        # The message names the line, never the token: it may be a real one with a typo.
        if not TOKEN.fullmatch(token):
            raise SettingsError(
                name,
                f"{path!r} line {number}: a token is at least 16 characters of A-Z a-z 0-9 "
                "- . _ ~ + / (then = padding), with nothing else on the line",
            )
        tokens[token] = None
    if not tokens:
        raise SettingsError(name, f"{path!r} holds no token (unset the variable to turn off)")
    return tuple(Secret(t) for t in tokens)


def _origins(reader: _Reader, name: str) -> frozenset[str]:
    items = {item.strip() for item in reader.raw(name).split(",") if item.strip()}
    if "*" in items and len(items) > 1:
        raise SettingsError(name, "* allows every origin: list origins or give * alone")
    for item in items - {"*"}:
        if not ORIGIN.fullmatch(item):
            raise SettingsError(
                name,
                f"expected origins like https://dash.example.com (scheme, host, optional "
                f"port; no path, no trailing slash), got {item[:100]!r}",
            )
    # Browsers send the scheme and host in lower case.
    return frozenset(item.lower() for item in items)


def _names(reader: _Reader, name: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in reader.raw(name).split(",") if item.strip())
    for item in items:
        if not IDENTIFIER.fullmatch(item):
            raise SettingsError(
                name, f"expected comma-separated table names like acc,user, got {item!r}"
            )
    if not items:
        raise SettingsError(name, "expected at least one table name")
    if len(set(items)) != len(items):
        raise SettingsError(name, f"lists a table twice: {','.join(items)}")
    return items


def _qualified_columns(reader: _Reader, name: str) -> frozenset[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    for raw in reader.raw(name).split(","):
        item = raw.strip()
        if not item:
            continue
        table, _, column = item.partition(".")
        if not (IDENTIFIER.fullmatch(table) and IDENTIFIER.fullmatch(column)):
            raise SettingsError(name, f"expected table.column entries, got {item!r}")
        pairs.add((table, column))
    return frozenset(pairs)


def _pool_min_size(r: _Reader, pool_size: int) -> int:
    # Two warm connections by default: a dashboard page asks for its lists at once, and on a
    # cold cache the second list would otherwise wait for a connection handshake (bench/
    # cold-burst measured 50-85 ms of acquire time with one). A smaller pool caps the default
    # rather than making an unset variable invalid.
    if r.is_set("DB_POOL_MIN_SIZE"):
        return r.integer("DB_POOL_MIN_SIZE", 0, pool_size)
    return min(int(r.raw("DB_POOL_MIN_SIZE")), pool_size)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Validate every variable; raise SettingsError naming the first bad one."""
    r = _Reader(env)
    pool_size = r.integer("DB_POOL_SIZE", 1, 1000)
    origins = _origins(r, "CORS_ALLOWED_ORIGINS")
    credentials = r.boolean("CORS_ALLOW_CREDENTIALS")
    if credentials and "*" in origins:
        # Browsers refuse credentials with a wildcard origin (Fetch standard, CORS check).
        raise SettingsError("CORS_ALLOW_CREDENTIALS", "cannot be true with CORS_ALLOWED_ORIGINS=*")
    host = r.raw("DB_HOST")
    if any(c.isspace() for c in host):
        raise SettingsError("DB_HOST", f"expected a host name or address, got {host!r}")
    return Settings(
        db_host=host,
        db_port=r.integer("DB_PORT", 1, 65535),
        db_user=r.raw("DB_USER"),
        db_password=_password(env),
        db_name=r.raw("DB_NAME"),
        db_connection_timeout=r.number("DB_CONNECTION_TIMEOUT", 0.1, 300),
        db_connect_retries=r.integer("DB_CONNECT_RETRIES", 0, 1000),
        db_connect_retry_delay=r.number("DB_CONNECT_RETRY_DELAY", 0, 300),
        db_pool_size=pool_size,
        db_pool_min_size=_pool_min_size(r, pool_size),
        db_pool_recycle_seconds=r.number("DB_POOL_RECYCLE_SECONDS", 1, 86400 * 7),
        db_acquire_timeout=r.number("DB_ACQUIRE_TIMEOUT", 0.01, 300),
        db_query_timeout=r.number("DB_QUERY_TIMEOUT", 0.01, 3600),
        db_check_interval=r.number("DB_CHECK_INTERVAL", 0, 3600),
        http_host=r.raw("HTTP_HOST"),
        http_port=r.integer("HTTP_PORT", 1, 65535),
        max_page_size=r.integer("MAX_PAGE_SIZE", 1, 100_000),
        resources=_names(r, "RESOURCES"),
        expose_secret_columns=_qualified_columns(r, "EXPOSE_SECRET_COLUMNS"),
        cache_ttl_seconds=r.number("CACHE_TTL_SECONDS", 0, 86400),
        cache_stale_while_revalidate_seconds=r.number(
            "CACHE_STALE_WHILE_REVALIDATE_SECONDS", 0, 86400
        ),
        cache_stale_if_error_seconds=r.number("CACHE_STALE_IF_ERROR_SECONDS", 0, 7 * 86400),
        cache_max_bytes=r.integer("CACHE_MAX_BYTES", 0, 2**40),
        api_tokens=_tokens(r, "API_TOKENS_FILE"),
        metrics_tokens=_tokens(r, "METRICS_TOKENS_FILE"),
        cors_allowed_origins=origins,
        cors_allow_credentials=credentials,
        log_level=r.choice("LOG_LEVEL", LOG_LEVELS),
        log_format=r.choice("LOG_FORMAT", LOG_FORMATS),
        shutdown_delay_seconds=r.number("SHUTDOWN_DELAY_SECONDS", 0, 300),
        shutdown_grace_seconds=r.number("SHUTDOWN_GRACE_SECONDS", 0, 3600),
    )
