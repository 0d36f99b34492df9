"""Configuration from the environment, validated once at start-up.

Each setting is declared once, as a field of `Settings`: its variable, default, bounds or
choices, whether it is secret, and a one-line meaning. `load_settings` parses by those
declarations; `cm-api --help`, the README table and `config/cm-api.env.example` are generated
from them (tests/settings_docs.py; the tests fail when a file differs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

from .tls import MODES, VERIFYING, Tls, TlsFileError, client_tls

T = TypeVar("T", int, float)

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# RFC 6750's b64token, at least 16 characters so that a guessable word is not a token.
TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{16,}=*")
# RFC 9110's token, the grammar of a field name.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
ORIGIN = re.compile(r"https?://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")

# A variable with one of these prefixes that is no setting is most likely a typo of one.
PREFIXES: Final = ("DB_", "CACHE_", "HTTP_", "CORS_", "SHUTDOWN_")
# Variables of other programs that share a prefix with ours (curl's and pip's proxy).
FOREIGN: Final = frozenset({"HTTP_PROXY"})
_DECLARATION: Final = "cm-api setting"


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


@dataclass(frozen=True, kw_only=True)
class Variable:
    """One environment variable as the operator sees it: in `--help`, the README table and the
    example file."""

    name: str
    default: str | None  # as written in the environment; None: required
    meaning: str
    accepts: str = ""  # what it accepts, e.g. "1-65535" or "true or false"
    secret: bool = False  # its value, or the file it names, is a secret: never shown


@dataclass(frozen=True, kw_only=True)
class Spec:
    """A setting as declared by `setting()`; `declarations()` completes it with the field."""

    variable: Variable
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    parse: Parse | None = None
    companions: tuple[Variable, ...] = ()  # further variables `parse` reads


@dataclass(frozen=True, kw_only=True)
class Declaration:
    """One field of `Settings`, its variables and the parser chosen by its type."""

    field: str
    spec: Spec
    parse: Parse

    @property
    def variable(self) -> Variable:
        return self.spec.variable

    @property
    def variables(self) -> tuple[Variable, ...]:
        return (self.spec.variable, *self.spec.companions)


class Env:
    """One environment mapping as the declarations read it; a blank value counts as unset."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def is_set(self, name: str) -> bool:
        return (self._env.get(name) or "").strip() != ""

    def verbatim(self, name: str) -> str:
        """The value as given, spaces included (a password may start or end with one)."""
        return self._env.get(name, "")

    def raw(self, variable: Variable) -> str:
        """The stripped value, else the default; SettingsError when a required one is unset."""
        if self.is_set(variable.name):
            return self._env[variable.name].strip()
        if variable.default is None:
            raise SettingsError(variable.name, f"is required ({variable.meaning})")
        return variable.default


Parse = Callable[[Env, Spec], object]


# -- parsers by type ------------------------------------------------------------------------


def _integer(env: Env, spec: Spec) -> int:
    return _bounded(env, spec, int, "an integer")


def _seconds(env: Env, spec: Spec) -> float:
    return _bounded(env, spec, float, "a number of seconds")


def _bounded(env: Env, spec: Spec, parse: Callable[[str], T], kind: str) -> T:
    raw = env.raw(spec.variable)
    expected = f"expected {kind} from {spec.low} to {spec.high}, got {raw!r}"
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(spec.variable.name, expected) from None
    if not math.isfinite(value) or not _within(value, spec.low, spec.high):
        raise SettingsError(spec.variable.name, expected)
    return value


def _within(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _boolean(env: Env, spec: Spec) -> bool:
    raw = env.raw(spec.variable).lower()
    if raw in ("true", "yes", "1", "on"):
        return True
    if raw in ("false", "no", "0", "off"):
        return False
    raise SettingsError(spec.variable.name, f"expected true or false, got {raw!r}")


def _choice(env: Env, spec: Spec) -> str:
    """One of `choices` in any case, an alias standing for its canonical name."""
    raw = env.raw(spec.variable).lower()
    value = spec.aliases.get(raw, raw)
    if value not in spec.choices:
        expected = ", ".join(spec.choices)
        raise SettingsError(spec.variable.name, f"expected one of {expected}, got {raw!r}")
    return value


def _text(env: Env, spec: Spec) -> str:
    return env.raw(spec.variable)


# -- parsers of special kinds ----------------------------------------------------------------


def _host(env: Env, spec: Spec) -> str:
    host = env.raw(spec.variable)
    if any(c.isspace() for c in host):
        raise SettingsError(spec.variable.name, f"expected a host name or address, got {host!r}")
    return host


def _read_file(variable: str, path: str) -> str:
    """The UTF-8 text of the file `variable` names; a SettingsError saying why it cannot be
    read (never its content)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SettingsError(variable, f"cannot read {path!r}: {reason}") from None


def _password(env: Env, spec: Spec) -> Secret:
    """DB_PASSWORD, or the content of the file DB_PASSWORD_FILE names."""
    (file_variable,) = spec.companions
    if not env.is_set(file_variable.name):
        # Not stripped: a password may legitimately start or end with a space.
        return Secret(env.verbatim(spec.variable.name))
    _one_password_source(env, spec.variable, file_variable)
    content = _read_file(file_variable.name, env.raw(file_variable))
    # Secrets written with `echo` end in a newline that is not part of the password.
    return Secret(content.removesuffix("\n").removesuffix("\r"))


def _one_password_source(env: Env, password: Variable, password_file: Variable) -> None:
    """Two sources of one password: which one wins would be a guess."""
    if env.verbatim(password.name):
        raise SettingsError(
            password_file.name, f"set either {password.name} or {password_file.name}, not both"
        )


def _tokens(env: Env, spec: Spec) -> tuple[Secret, ...]:
    """The bearer tokens in the file the variable names; none when it is unset."""
    name = spec.variable.name
    if not env.is_set(name):
        return ()
    path = env.raw(spec.variable)
    tokens: dict[str, None] = {}
    for number, line in enumerate(_read_file(name, path).splitlines(), 1):
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


def _secret_text(env: Env, spec: Spec) -> Secret:
    return Secret(env.raw(spec.variable))


def _items(env: Env, spec: Spec) -> list[str]:
    return [item.strip() for item in env.raw(spec.variable).split(",") if item.strip()]


def _origins(env: Env, spec: Spec) -> frozenset[str]:
    name = spec.variable.name
    items = set(_items(env, spec))
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


def _header_names(env: Env, spec: Spec) -> tuple[str, ...]:
    names: list[str] = []
    for item in _items(env, spec):
        if not HEADER_NAME.fullmatch(item):
            raise SettingsError(
                spec.variable.name,
                f"expected comma-separated header names like X-Trace-Id, got {item[:64]!r}",
            )
        if item.lower() not in names:  # header names are case-insensitive
            names.append(item.lower())
    return tuple(names)


def _table_names(env: Env, spec: Spec) -> tuple[str, ...]:
    name = spec.variable.name
    items = tuple(_items(env, spec))
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


def _table_columns(env: Env, spec: Spec) -> frozenset[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    for item in _items(env, spec):
        table, _, column = item.partition(".")
        if not (IDENTIFIER.fullmatch(table) and IDENTIFIER.fullmatch(column)):
            raise SettingsError(spec.variable.name, f"expected table.column entries, got {item!r}")
        pairs.add((table, column))
    return frozenset(pairs)


def _time_zone(env: Env, spec: Spec) -> str:
    """An IANA time zone name that zoneinfo finds (the system's or the tzdata package's), or
    empty. Not localtime: that is the machine's own zone, which naming one is meant to avoid."""
    name = env.raw(spec.variable)
    if not name:
        return name
    if name != "localtime":
        with contextlib.suppress(ValueError, KeyError, OSError):  # KeyError: not found
            ZoneInfo(name)
            return name
    raise SettingsError(
        spec.variable.name,
        f"expected an IANA time zone name such as Europe/Berlin, or UTC, got {name[:64]!r}",
    )


# -- the declarations -------------------------------------------------------------------------


def setting(
    name: str,
    default: str | None,
    meaning: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: Sequence[str] = (),
    aliases: Mapping[str, str] | None = None,
    accepts: str = "",
    secret: bool = False,
    parse: Parse | None = None,
    companions: Sequence[Variable] = (),
) -> Any:
    """Declare a field of `Settings`: its variable `name`, `default` as written in the
    environment (None: required) and `meaning`. Fields of type int, float, bool and str are
    parsed by their type (numbers within `low` and `high`, text within `choices`, which
    `aliases` may also name); other types need `parse`, which reads `companions` too."""
    spec = Spec(
        variable=Variable(
            name=name, default=default, meaning=meaning, accepts=accepts, secret=secret
        ),
        low=low,
        high=high,
        choices=tuple(choices),
        aliases=MappingProxyType(dict(aliases or {})),
        parse=parse,
        companions=tuple(companions),
    )
    return dataclasses.field(metadata={_DECLARATION: spec})


def _with_aliases(choice: str, aliases: Mapping[str, str]) -> str:
    others = [alias for alias, canonical in aliases.items() if canonical == choice]
    return f"{choice} (or {', '.join(others)})" if others else choice


@dataclass(frozen=True, kw_only=True)
class Settings:
    db_host: str = setting(
        "DB_HOST", None, "MySQL/MariaDB host name or address", parse=_host, accepts="host"
    )
    db_port: int = setting("DB_PORT", "3306", "MySQL/MariaDB TCP port", low=1, high=65535)
    db_user: str = setting("DB_USER", None, "database user")
    # setting() returns a dataclasses.field, not a shared default (ruff knows immutable types).
    db_password: Secret = setting(  # noqa: RUF009
        "DB_PASSWORD",
        "",
        "database password; empty means no password",
        accepts="text",
        secret=True,
        parse=_password,
        companions=[
            Variable(
                name="DB_PASSWORD_FILE",
                default="",
                meaning="file holding the password (a mounted secret); excludes DB_PASSWORD; "
                "one trailing newline is ignored",
                accepts="path",
                secret=True,
            )
        ],
    )
    db_name: str = setting("DB_NAME", None, "database (schema) holding the exposed tables")
    db_connection_timeout: float = setting(
        "DB_CONNECTION_TIMEOUT",
        "5",
        "seconds to open one database connection, handshake included",
        low=0.1,
        high=300,
    )
    db_connect_retries: int = setting(
        "DB_CONNECT_RETRIES",
        "5",
        "extra connection attempts at start-up after the first one fails (0 = try once)",
        low=0,
        high=1000,
    )
    db_connect_retry_delay: float = setting(
        "DB_CONNECT_RETRY_DELAY",
        "2",
        "seconds between start-up connection attempts",
        low=0,
        high=300,
    )
    db_pool_size: int = setting(
        "DB_POOL_SIZE", "8", "maximum connections the process holds", low=1, high=1000
    )
    db_pool_min_size: int = setting(
        "DB_POOL_MIN_SIZE",
        "2",
        "connections opened at start-up and kept warm, at most DB_POOL_SIZE (unset: 2, or "
        "DB_POOL_SIZE if smaller)",
        low=0,
        high=1000,
    )
    db_pool_recycle_seconds: float = setting(
        "DB_POOL_RECYCLE_SECONDS",
        "1800",
        "a connection older than this is closed when it returns to the pool or is found idle, "
        "and replaced on demand (keep it below the server's wait_timeout)",
        low=1,
        high=7 * 86400,
    )
    db_acquire_timeout: float = setting(
        "DB_ACQUIRE_TIMEOUT",
        "2",
        "seconds a request waits for a free pooled connection before answering 503",
        low=0.01,
        high=300,
    )
    db_query_timeout: float = setting(
        "DB_QUERY_TIMEOUT",
        "5",
        "seconds a query waits for the database: for its first row, then for each next batch "
        "of rows (not for the whole transfer, which grows with the table); past it the query "
        "is abandoned (503) and its connection closed",
        low=0.01,
        high=3600,
    )
    db_max_statement_seconds: float = setting(
        "DB_MAX_STATEMENT_SECONDS",
        "60",
        "the server stops a statement running longer, transfer included (MariaDB "
        "max_statement_time, MySQL max_execution_time), so a query the service gave up on "
        "does not keep the database busy; at least DB_QUERY_TIMEOUT (unset: 60, or "
        "DB_QUERY_TIMEOUT if larger); 0: the server's own limit",
        low=0,
        high=86400,
    )
    db_driver: str = setting(
        "DB_DRIVER",
        "asyncmy",
        "MySQL driver: asyncmy (parses rows in Cython) or aiomysql (pure Python); both give "
        "the same JSON",
        choices=("asyncmy", "aiomysql"),
    )
    db_ssl_mode: str = setting(
        "DB_SSL_MODE",
        "preferred",
        "TLS to the database, as MySQL's --ssl-mode: disabled; preferred (TLS when the server "
        "offers it); required (TLS, any certificate); verify_ca (a certificate signed by "
        "DB_SSL_CA); verify_identity (also naming DB_HOST). Unset with DB_SSL_CA set: verify_ca",
        choices=MODES,
        aliases={"verify-ca": "verify_ca", "verify-identity": "verify_identity"},
    )
    db_ssl_ca: str = setting(
        "DB_SSL_CA",
        "",
        "file of CA certificates (PEM) the server's certificate must be signed by; required by "
        "verify_ca and verify_identity, used by no other mode",
        accepts="path",
    )
    db_ssl_cert: str = setting(
        "DB_SSL_CERT",
        "",
        "client certificate file (PEM), for servers that require one (REQUIRE X509)",
        accepts="path",
    )
    db_ssl_key: Secret = setting(  # noqa: RUF009
        "DB_SSL_KEY",
        "",
        "the client certificate's private key file (PEM); unset: the key is in DB_SSL_CERT's file",
        accepts="path",
        secret=True,
        parse=_secret_text,
    )
    db_check_interval: float = setting(
        "DB_CHECK_INTERVAL",
        "5",
        "seconds without any statement, connection attempt or ping after which a background "
        "ping checks the database (cmapi_db_up, /readyz?verbose); 0 turns the check off",
        low=0,
        high=3600,
    )
    db_datetime_zone: str = setting(
        "DB_DATETIME_ZONE",
        "",
        "IANA time zone (Europe/Berlin, UTC) in which the application wrote DATETIME values, "
        "which are then sent with that instant's UTC offset (a wall time that occurs twice: "
        "the earlier instant; one the clocks skip: the offset before the gap); empty: "
        "DATETIME without an offset. TIMESTAMP is always sent in UTC (Z)",
        accepts="time zone name",
        parse=_time_zone,
    )
    http_host: str = setting(
        "HTTP_HOST", "0.0.0.0", "address the HTTP server listens on", accepts="host"
    )
    http_port: int = setting("HTTP_PORT", "8080", "HTTP port", low=1, high=65535)
    max_page_size: int = setting(
        "MAX_PAGE_SIZE", "1000", "largest accepted ?limit= on list routes", low=1, high=100_000
    )
    filter_max_values: int = setting(
        "FILTER_MAX_VALUES",
        "100",
        "most values one filter of a list route may be given (?status=a&status=b: any of "
        "them) in one request; more is a 400",
        low=1,
        high=1000,
    )
    max_list_bytes: int = setting(
        "MAX_LIST_BYTES",
        "33554432",
        "largest JSON body of a list answer; a bigger list is refused with 400 "
        "result_too_large, which tells the client to ask for pages (?limit=, Link); memory "
        "needs up to twice this per list being loaded",
        low=1024,
        high=2**40,
    )
    resources: tuple[str, ...] = setting(
        "RESOURCES",
        "acc,user",
        "comma-separated tables served as /<table>/ (each needs a one-column primary key)",
        accepts="table names",
        parse=_table_names,
    )
    expose_secret_columns: frozenset[tuple[str, str]] = setting(
        "EXPOSE_SECRET_COLUMNS",
        "",
        "comma-separated table.column names served although they look secret "
        "(password, passwd, secret, token, salt, hash, api_key)",
        accepts="table.column list",
        parse=_table_columns,
    )
    cache_ttl_seconds: float = setting(
        "CACHE_TTL_SECONDS",
        "5",
        "seconds a loaded answer is served without asking the database; 0 stores nothing "
        "(concurrent identical requests still share one query)",
        low=0,
        high=86400,
    )
    cache_stale_while_revalidate_seconds: float = setting(
        "CACHE_STALE_WHILE_REVALIDATE_SECONDS",
        "10",
        "after the TTL, seconds an answer is still served at once while one background query "
        "refreshes it; answers are at most TTL + this old while the database is healthy",
        low=0,
        high=86400,
    )
    cache_stale_if_error_seconds: float = setting(
        "CACHE_STALE_IF_ERROR_SECONDS",
        "300",
        "after the TTL, seconds the last good answer is served (X-Cache: STALE) while the "
        "database fails; past that, 503",
        low=0,
        high=7 * 86400,
    )
    cache_max_bytes: int = setting(
        "CACHE_MAX_BYTES",
        "67108864",
        "bytes of cached bodies (plain and gzip) kept in memory; least recently used go first",
        low=0,
        high=2**40,
    )
    api_tokens: tuple[Secret, ...] = setting(
        "API_TOKENS_FILE",
        "",
        "file of bearer tokens (one per line, at least 16 characters, # comments) that the data "
        "routes and /openapi.json require; empty: those routes are open (a warning at start-up "
        "when HTTP_HOST is not a loopback address); read at start-up",
        accepts="path",
        secret=True,
        parse=_tokens,
    )
    metrics_tokens: tuple[Secret, ...] = setting(
        "METRICS_TOKENS_FILE",
        "",
        "file of bearer tokens for /metrics, same format; empty: /metrics is open",
        accepts="path",
        secret=True,
        parse=_tokens,
    )
    long_poll_max_seconds: int = setting(
        "LONG_POLL_MAX_SECONDS",
        "30",
        "longest a request with Prefer: wait=N and a current If-None-Match is held until the "
        "data changes (N is capped to this); keep it below the idle time-out of every proxy "
        "in front; 0 turns long-poll off",
        low=0,
        high=300,
    )
    long_poll_max_held: int = setting(
        "LONG_POLL_MAX_HELD",
        "1000",
        "most requests held at once by this process; past it, they are answered at once "
        "(each holds a socket: keep it below the open-file limit)",
        low=0,
        high=100_000,
    )
    cors_allowed_origins: frozenset[str] = setting(
        "CORS_ALLOWED_ORIGINS",
        "",
        "comma-separated origins (https://dash.example.com) whose pages may read the data "
        "routes, or * for any; empty: no CORS headers, preflights get 405",
        accepts="origins, or *",
        parse=_origins,
    )
    cors_allowed_headers: tuple[str, ...] = setting(
        "CORS_ALLOWED_HEADERS",
        "",
        "comma-separated request header names a page may send besides those always allowed "
        "(Authorization, If-None-Match, Prefer, X-Request-Id, Content-Type, X-Requested-With, "
        "Cache-Control, Pragma and the CORS-safelisted ones)",
        accepts="header names",
        parse=_header_names,
    )
    cors_allow_credentials: bool = setting(
        "CORS_ALLOW_CREDENTIALS",
        "false",
        "true lets those pages send cookies or HTTP authentication (not with *); bearer "
        "tokens in an Authorization header need no credentials mode",
    )
    log_level: str = setting(
        "LOG_LEVEL",
        "info",
        "the lowest level written, in any case; info writes one line per request (probes "
        "and scrapes only at debug); critical and fatal stand for error, the highest one used",
        choices=("debug", "info", "warning", "error"),
        aliases={"warn": "warning", "critical": "error", "fatal": "error"},
    )
    log_format: str = setting(
        "LOG_FORMAT",
        "auto",
        "console (readable), json, or auto: console on a terminal, JSON otherwise",
        choices=("auto", "json", "console"),
    )
    shutdown_delay_seconds: float = setting(
        "SHUTDOWN_DELAY_SECONDS",
        "5",
        "after SIGTERM, seconds the server goes on serving while /readyz answers 503, so load "
        "balancers stop sending traffic before the listener closes",
        low=0,
        high=300,
    )
    shutdown_grace_seconds: float = setting(
        "SHUTDOWN_GRACE_SECONDS",
        "20",
        "after that delay, seconds requests in flight get to finish before they are cut; "
        "the process exits within delay + grace + 5 s",
        low=0,
        high=3600,
    )

    def tls(self) -> Tls:
        """What each new database connection is asked to do (files read now)."""
        return client_tls(
            self.db_ssl_mode, self.db_ssl_ca, self.db_ssl_cert, self.db_ssl_key.reveal()
        )

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


def declarations() -> tuple[Declaration, ...]:
    """Every field of `Settings` with its declaration and parser, in declaration order."""
    types = typing.get_type_hints(Settings)
    return tuple(
        _declaration(f.name, types[f.name], f.metadata[_DECLARATION])
        for f in dataclasses.fields(Settings)
    )


def _declaration(field: str, kind: object, spec: Spec) -> Declaration:
    accepts = spec.variable.accepts or _accepts(kind, spec)
    spec = dataclasses.replace(spec, variable=dataclasses.replace(spec.variable, accepts=accepts))
    return Declaration(field=field, spec=spec, parse=_parser(kind, spec))


def _accepts(kind: object, spec: Spec) -> str:
    """What the variable accepts, as its bounds, choices or type say."""
    if spec.low is not None or spec.high is not None:
        return f"{'' if spec.low is None else spec.low}-{'' if spec.high is None else spec.high}"
    if spec.choices:
        return ", ".join(_with_aliases(choice, spec.aliases) for choice in spec.choices)
    return "true or false" if kind is bool else "text"


def _parser(kind: object, spec: Spec) -> Parse:
    if spec.parse is not None:
        return spec.parse
    if kind is bool:
        return _boolean
    if kind is int:
        return _integer
    if kind is float:
        return _seconds
    if kind is str:
        return _choice if spec.choices else _text
    raise TypeError(f"{spec.variable.name}: a setting of type {kind} needs parse=")


def _variables() -> Iterator[Variable]:
    for declaration in declarations():
        yield from declaration.variables


# Every environment variable read, in declaration order (what the documentation lists).
VARIABLES: Final[tuple[Variable, ...]] = tuple(_variables())


# -- rules across settings --------------------------------------------------------------------


def _pool_min_size_within_pool_size(s: Settings, env: Env) -> Settings:
    """DB_POOL_MIN_SIZE is at most DB_POOL_SIZE. Unset, its default is capped by a smaller
    pool rather than making the unset variable invalid."""
    if s.db_pool_min_size <= s.db_pool_size:
        return s
    if env.is_set("DB_POOL_MIN_SIZE"):
        raise SettingsError(
            "DB_POOL_MIN_SIZE",
            f"expected an integer from 0 to DB_POOL_SIZE ({s.db_pool_size}), "
            f"got {s.db_pool_min_size}",
        )
    return dataclasses.replace(s, db_pool_min_size=s.db_pool_size)


def _credentials_need_listed_origins(s: Settings, env: Env) -> Settings:
    # Browsers refuse credentials with a wildcard origin (Fetch standard, CORS check).
    if s.cors_allow_credentials and "*" in s.cors_allowed_origins:
        raise SettingsError("CORS_ALLOW_CREDENTIALS", "cannot be true with CORS_ALLOWED_ORIGINS=*")
    return s


def _statement_limit_covers_query_timeout(s: Settings, env: Env) -> Settings:
    """A server limit below the client's would turn slow queries into server errors. Unset, the
    limit's default is raised to DB_QUERY_TIMEOUT rather than making the unset variable
    invalid."""
    limit = s.db_max_statement_seconds
    if not 0 < limit < s.db_query_timeout:
        return s
    if env.is_set("DB_MAX_STATEMENT_SECONDS"):
        raise SettingsError(
            "DB_MAX_STATEMENT_SECONDS",
            f"expected 0 or at least DB_QUERY_TIMEOUT ({s.db_query_timeout:g}), got {limit:g}",
        )
    return dataclasses.replace(s, db_max_statement_seconds=s.db_query_timeout)


def _tls_files_fit_the_mode(s: Settings, env: Env) -> Settings:
    """Files a mode would ignore are a mistake, not a detail: a CA given to `required`
    would look like verification without being one. As MySQL's client, a CA with no mode
    set means verify_ca."""
    if s.db_ssl_ca and not env.is_set("DB_SSL_MODE"):
        s = dataclasses.replace(s, db_ssl_mode="verify_ca")
    mode = s.db_ssl_mode
    given = {
        "DB_SSL_CA": s.db_ssl_ca,
        "DB_SSL_CERT": s.db_ssl_cert,
        "DB_SSL_KEY": s.db_ssl_key.reveal(),
    }
    if mode == "disabled":
        for name, value in given.items():
            if value:
                raise SettingsError(name, "is set, but DB_SSL_MODE=disabled uses no TLS")
    if mode in VERIFYING and not s.db_ssl_ca:
        raise SettingsError(
            "DB_SSL_CA", f"is required with DB_SSL_MODE={mode} (the CA that signed the server's)"
        )
    if s.db_ssl_ca and mode not in VERIFYING:
        raise SettingsError(
            "DB_SSL_CA",
            f"is used only by verify_ca and verify_identity; DB_SSL_MODE={mode} checks no "
            "certificate",
        )
    try:
        s.tls()
    except TlsFileError as exc:
        raise SettingsError(exc.variable, str(exc)) from None
    return s


RULES: Final[tuple[Callable[[Settings, Env], Settings], ...]] = (
    _pool_min_size_within_pool_size,
    _statement_limit_covers_query_timeout,
    _credentials_need_listed_origins,
    _tls_files_fit_the_mode,
)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Validate every variable; raise SettingsError naming the first bad one."""
    source = Env(env)
    # Any: each parser returns its field's type (tests/test_settings.py checks every one).
    values: dict[str, Any] = {d.field: d.parse(source, d.spec) for d in declarations()}
    settings = Settings(**values)
    for rule in RULES:
        settings = rule(settings, source)
    return settings


def unknown_variables(env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Variables named like settings that are none (DB_POOLSIZE), each with the closest
    setting's name, or None: a typo would otherwise leave the default in force unnoticed."""
    known = {v.name for v in VARIABLES}
    unknown = sorted(
        name
        for name in env
        if name.startswith(PREFIXES) and name not in known and name not in FOREIGN
    )
    return [(name, _closest(name, known)) for name in unknown]


def _closest(name: str, known: set[str]) -> str | None:
    matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return matches[0] if matches else None
