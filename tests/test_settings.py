"""Settings: defaults, validation that names the variable, secrets kept out of sight, and the
example file and README table kept in step with the code."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from service.settings import (
    VARIABLES,
    Declaration,
    Secret,
    Settings,
    SettingsError,
    declarations,
    load_settings,
    unknown_variables,
)

from . import settings_docs
from .tls_files import make_tls_files

REQUIRED = {"DB_HOST": "db.example", "DB_USER": "dash", "DB_NAME": "ops"}


def test_an_unset_pool_minimum_is_capped_by_the_pool_size_and_a_set_one_is_checked() -> None:
    assert load_settings({**REQUIRED, "DB_POOL_SIZE": "1"}).db_pool_min_size == 1
    assert load_settings({**REQUIRED, "DB_POOL_MIN_SIZE": "0"}).db_pool_min_size == 0
    with pytest.raises(SettingsError) as caught:
        load_settings({**REQUIRED, "DB_POOL_SIZE": "1", "DB_POOL_MIN_SIZE": "2"})
    assert caught.value.variable == "DB_POOL_MIN_SIZE"


def test_defaults() -> None:
    s = load_settings(REQUIRED)
    assert (s.db_host, s.db_user, s.db_name) == ("db.example", "dash", "ops")
    assert s.db_port == 3306
    assert s.db_pool_size == 8
    assert s.db_pool_min_size == 2
    assert s.db_password.reveal() == ""
    assert s.resources == ("acc", "user")
    assert s.http_port == 8080
    assert s.log_format == "auto"


@pytest.mark.parametrize("name", sorted(REQUIRED))
@pytest.mark.parametrize("value", [None, "", "   "])
def test_required_variable_missing(name: str, value: str | None) -> None:
    env = dict(REQUIRED)
    if value is None:
        del env[name]
    else:
        env[name] = value
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert err.value.variable == name
    assert str(err.value).startswith(f"{name}: is required")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_PORT", "abc"),
        ("DB_PORT", "0"),
        ("DB_PORT", "65536"),
        ("DB_PORT", "33.06"),
        ("DB_POOL_SIZE", "0"),
        ("DB_POOL_SIZE", "eight"),
        ("DB_POOL_MIN_SIZE", "9"),  # above DB_POOL_SIZE (8)
        ("DB_POOL_MIN_SIZE", "-1"),
        ("DB_CONNECTION_TIMEOUT", "nan"),
        ("DB_CONNECTION_TIMEOUT", "-1"),
        ("DB_CONNECTION_TIMEOUT", "inf"),
        ("DB_CONNECT_RETRIES", "-1"),
        ("DB_CONNECT_RETRIES", "1.5"),
        ("DB_CONNECT_RETRY_DELAY", "soon"),
        ("DB_POOL_RECYCLE_SECONDS", "0"),
        ("DB_ACQUIRE_TIMEOUT", "0"),
        ("DB_QUERY_TIMEOUT", "x"),
        ("DB_MAX_STATEMENT_SECONDS", "4"),  # below DB_QUERY_TIMEOUT (5)
        ("DB_MAX_STATEMENT_SECONDS", "-1"),
        ("DB_DRIVER", "mysqlclient"),
        ("DB_SSL_MODE", "tls"),
        ("DB_CHECK_INTERVAL", "-1"),
        ("DB_DATETIME_ZONE", "Mars/Olympus"),
        ("DB_DATETIME_ZONE", "+05:00"),  # an offset has no DST rules: name the zone
        ("DB_DATETIME_ZONE", "Europe"),  # a directory of zones
        ("DB_DATETIME_ZONE", "../../etc/passwd"),
        ("DB_DATETIME_ZONE", "localtime"),  # the machine's own zone
        ("HTTP_PORT", "99999"),
        ("MAX_PAGE_SIZE", "0"),
        ("MAX_LIST_BYTES", "100"),
        ("RESOURCES", "acc,us er"),
        ("RESOURCES", "acc;drop"),
        ("RESOURCES", "acc,acc"),
        ("RESOURCES", ","),
        ("EXPOSE_SECRET_COLUMNS", "password_hash"),
        ("EXPOSE_SECRET_COLUMNS", "user.pass word"),
        ("CACHE_TTL_SECONDS", "-1"),
        ("CACHE_TTL_SECONDS", "five"),
        ("CACHE_STALE_WHILE_REVALIDATE_SECONDS", "nan"),
        ("CACHE_STALE_IF_ERROR_SECONDS", "-0.5"),
        ("CACHE_MAX_BYTES", "64MiB"),
        ("CACHE_MAX_BYTES", "-1"),
        ("LOG_LEVEL", "verbose"),
        ("LOG_FORMAT", "xml"),
        ("DB_HOST", "db example"),
    ],
)
def test_malformed_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({**REQUIRED, name: value})
    assert err.value.variable == name
    assert str(err.value).startswith(f"{name}: ")
    assert "expected" in str(err.value) or "twice" in str(err.value)


def test_statement_limit_may_equal_the_query_timeout_or_be_off() -> None:
    s = load_settings({**REQUIRED, "DB_QUERY_TIMEOUT": "30", "DB_MAX_STATEMENT_SECONDS": "30"})
    assert (s.db_query_timeout, s.db_max_statement_seconds) == (30, 30)
    off = load_settings({**REQUIRED, "DB_QUERY_TIMEOUT": "90", "DB_MAX_STATEMENT_SECONDS": "0"})
    assert off.db_max_statement_seconds == 0
    unset = load_settings({**REQUIRED, "DB_QUERY_TIMEOUT": "90"})
    assert unset.db_max_statement_seconds == 90


def test_min_size_may_equal_pool_size() -> None:
    s = load_settings({**REQUIRED, "DB_POOL_SIZE": "3", "DB_POOL_MIN_SIZE": "3"})
    assert (s.db_pool_size, s.db_pool_min_size) == (3, 3)


def test_lists_are_parsed() -> None:
    s = load_settings(
        {**REQUIRED, "RESOURCES": " acc , user,orders ", "EXPOSE_SECRET_COLUMNS": "user.salt, a.b"}
    )
    assert s.resources == ("acc", "user", "orders")
    assert s.expose_secret_columns == {("user", "salt"), ("a", "b")}
    assert s.public()["expose_secret_columns"] == ["a.b", "user.salt"]


def test_password_never_shows(tmp_path: Path) -> None:
    s = load_settings({**REQUIRED, "DB_PASSWORD": "hunter2-Sup3r"})
    assert s.db_password.reveal() == "hunter2-Sup3r"
    for text in (repr(s), str(s), repr(s.public()), str(s.db_password)):
        assert "hunter2" not in text
    assert s.public()["db_password"] == "<redacted>"  # set, and that is all the log says
    assert load_settings(REQUIRED).public()["db_password"] == ""


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file \n", encoding="utf-8")
    s = load_settings({**REQUIRED, "DB_PASSWORD_FILE": str(secret)})
    assert s.db_password == Secret("from-a-file ")


def test_password_file_missing(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({**REQUIRED, "DB_PASSWORD_FILE": str(tmp_path / "absent")})
    assert err.value.variable == "DB_PASSWORD_FILE"
    assert "cannot read" in str(err.value)


def test_password_and_password_file_exclude_each_other(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("x", encoding="utf-8")
    with pytest.raises(SettingsError) as err:
        load_settings({**REQUIRED, "DB_PASSWORD": "p4ss", "DB_PASSWORD_FILE": str(secret)})
    assert err.value.variable == "DB_PASSWORD_FILE"
    assert "p4ss" not in str(err.value)


def test_every_variable_is_read(tmp_path: Path) -> None:
    """Each variable in VARIABLES changes the result when set to another valid value."""
    base = load_settings(REQUIRED)
    tokens = tmp_path / "tokens"
    tokens.write_text("0123456789abcdef0123\n", encoding="utf-8")
    tls = make_tls_files(tmp_path)
    others = {
        "DB_HOST": "other", "DB_PORT": "3307", "DB_USER": "u2", "DB_PASSWORD": "p",
        "DB_NAME": "n2", "DB_CONNECTION_TIMEOUT": "7", "DB_CONNECT_RETRIES": "9",
        "DB_CONNECT_RETRY_DELAY": "3", "DB_POOL_SIZE": "4", "DB_POOL_MIN_SIZE": "3",
        "DB_POOL_RECYCLE_SECONDS": "60", "DB_ACQUIRE_TIMEOUT": "1", "DB_QUERY_TIMEOUT": "9",
        "DB_MAX_STATEMENT_SECONDS": "0", "DB_DRIVER": "aiomysql",
        "DB_CHECK_INTERVAL": "0", "DB_DATETIME_ZONE": "Europe/Berlin",
        "HTTP_HOST": "127.0.0.1", "HTTP_PORT": "9000",
        "MAX_PAGE_SIZE": "10", "FILTER_MAX_VALUES": "3", "MAX_LIST_BYTES": "4096",
        "RESOURCES": "acc", "EXPOSE_SECRET_COLUMNS": "acc.token", "LOG_LEVEL": "debug",
        "LOG_FORMAT": "json", "CACHE_TTL_SECONDS": "0", "CACHE_STALE_WHILE_REVALIDATE_SECONDS": "1",
        "CACHE_STALE_IF_ERROR_SECONDS": "0.5", "CACHE_MAX_BYTES": "1024",
        "SHUTDOWN_DELAY_SECONDS": "0", "SHUTDOWN_GRACE_SECONDS": "1",
        "API_TOKENS_FILE": str(tokens), "METRICS_TOKENS_FILE": str(tokens),
        "CORS_ALLOWED_ORIGINS": "https://dash.example", "CORS_ALLOW_CREDENTIALS": "true",
        "CORS_ALLOWED_HEADERS": "X-Trace-Id", "LONG_POLL_MAX_SECONDS": "5",
        "LONG_POLL_MAX_HELD": "7", "DB_SSL_MODE": "required", "DB_SSL_CA": str(tls.ca),
        "DB_SSL_CERT": str(tls.client_combined), "DB_SSL_KEY": str(tls.client_key),
    }  # fmt: skip
    # Set with the variable and without it: a key needs its certificate.
    companions = {"DB_SSL_KEY": {"DB_SSL_CERT": str(tls.client_combined)}}
    names = {v.name for v in VARIABLES}
    assert set(others) | {"DB_PASSWORD_FILE"} == names
    for name, value in others.items():
        env = {**REQUIRED, **companions.get(name, {})}
        assert load_settings({**env, name: value}) != load_settings(env), name
    assert load_settings(REQUIRED) == base


# -- the declarations and what derives from them ---------------------------------------------


def test_every_field_is_declared_and_parses_to_its_type() -> None:
    s = load_settings(REQUIRED)
    types = typing.get_type_hints(Settings)
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {d.field for d in declarations()} == fields
    for name in fields:
        expected = typing.get_origin(types[name]) or types[name]
        assert isinstance(getattr(s, name), expected), name


@pytest.mark.parametrize(
    "declaration",
    [d for d in declarations() if d.spec.low is not None],
    ids=lambda d: d.variable.name,
)
def test_the_bounds_shown_are_the_bounds_enforced(declaration: Declaration) -> None:
    spec = declaration.spec
    name, low, high = spec.variable.name, spec.low, spec.high
    assert low is not None
    assert high is not None
    assert spec.variable.accepts == f"{low}-{high}"
    # The largest pool, so that DB_POOL_MIN_SIZE's own bounds are the ones tried.
    env = {**REQUIRED, "DB_POOL_SIZE": "1000"}
    for inside in (low, high):
        load_settings({**env, name: str(inside)})
    for outside in (low - 1, high + 1):
        with pytest.raises(SettingsError) as err:
            load_settings({**env, name: str(outside)})
        assert err.value.variable == name
        assert f"from {low} to {high}" in str(err.value)


def test_variable_names_are_unique_and_every_default_is_valid() -> None:
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names))
    for var in VARIABLES:
        if var.default:  # each default, given explicitly, is accepted as it is
            load_settings({**REQUIRED, var.name: var.default})


def test_env_example_is_generated_from_the_declarations() -> None:
    shown = settings_docs.ENV_EXAMPLE.read_text(encoding="utf-8")
    assert shown == settings_docs.env_example(), "run `make settings-docs`"


def test_readme_configuration_table_is_generated_from_the_declarations() -> None:
    readme = settings_docs.README.read_text(encoding="utf-8")
    assert readme == settings_docs.readme_with_table(readme), "run `make settings-docs`"


def test_the_generated_table_shows_bounds_defaults_and_secrets() -> None:
    table = settings_docs.readme_table()
    assert "| `DB_PORT` | `3306` | 1-65535 | MySQL/MariaDB TCP port |" in table
    assert "| `DB_HOST` | required |" in table
    assert "| `DB_PASSWORD` | (empty) | text (secret) |" in table
    assert len(table.splitlines()) == len(VARIABLES) + 4  # markers, header and rule


# -- LOG_LEVEL and unknown variables ----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "level"),
    [
        ("debug", "debug"),
        ("INFO", "info"),
        ("Warning", "warning"),
        ("WARN", "warning"),
        ("warn", "warning"),
        ("ERROR", "error"),
        ("CRITICAL", "error"),
        ("fatal", "error"),
        (" Info ", "info"),
    ],
)
def test_log_level_aliases_in_any_case_become_the_canonical_name(given: str, level: str) -> None:
    assert load_settings({**REQUIRED, "LOG_LEVEL": given}).log_level == level


def test_unknown_variables_are_named_with_the_closest_setting() -> None:
    env = {
        **REQUIRED,
        "DB_POOLSIZE": "50",
        "CACHE_TTL": "9",
        "CORS_ORIGINS": "*",
        "SHUTDOWN_DELAY": "1",
        "HTTP_PROXY": "http://proxy:3128",  # curl's and pip's, not a typo of ours
        "DB_ZZZZZZZZZZZZZZZZZZ": "x",
        "PATH": "/bin",
    }
    assert unknown_variables(env) == [
        ("CACHE_TTL", "CACHE_TTL_SECONDS"),
        ("CORS_ORIGINS", "CORS_ALLOWED_ORIGINS"),
        ("DB_POOLSIZE", "DB_POOL_SIZE"),
        ("DB_ZZZZZZZZZZZZZZZZZZ", None),
        ("SHUTDOWN_DELAY", "SHUTDOWN_DELAY_SECONDS"),
    ]
    load_settings(env)  # a warning, never an error


# -- bearer tokens and CORS -------------------------------------------------------------------


def _token_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tokens"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_tokens_file_skips_comments_blank_lines_and_duplicates(tmp_path: Path) -> None:
    text = "# dashboard\n\n  0123456789abcdef0123  \nAAAABBBBCCCCDDDD==\n0123456789abcdef0123\n"
    s = load_settings({**REQUIRED, "API_TOKENS_FILE": _token_file(tmp_path, text)})
    assert [t.reveal() for t in s.api_tokens] == ["0123456789abcdef0123", "AAAABBBBCCCCDDDD=="]
    assert s.metrics_tokens == ()
    assert s.public()["api_tokens"] == "2 token(s)"
    assert "0123456789abcdef0123" not in repr(s)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# nothing but a comment\n", "holds no token"),
        ("short-token\n", "line 1"),
        ("0123456789abcdef 0123456789abcdef\n", "line 1"),
        ("# ok\n0123456789abcdef\x01\n", "line 2"),
    ],
)
def test_bad_tokens_file_is_named_without_its_content(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = _token_file(tmp_path, text)
    with pytest.raises(SettingsError) as err:
        load_settings({**REQUIRED, "METRICS_TOKENS_FILE": path})
    assert err.value.variable == "METRICS_TOKENS_FILE"
    assert problem in str(err.value)
    assert "0123456789abcdef" not in str(err.value)


def test_unreadable_tokens_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({**REQUIRED, "API_TOKENS_FILE": str(tmp_path / "absent")})
    assert err.value.variable == "API_TOKENS_FILE"
    assert "cannot read" in str(err.value)


def test_cors_origins_are_normalised() -> None:
    s = load_settings(
        {**REQUIRED, "CORS_ALLOWED_ORIGINS": " https://Dash.Example.com , http://[::1]:8080 "}
    )
    assert s.cors_allowed_origins == {"https://dash.example.com", "http://[::1]:8080"}
    assert not s.cors_allow_credentials
    headers = load_settings({**REQUIRED, "CORS_ALLOWED_HEADERS": "X-Trace, x-trace , Baggage"})
    assert headers.cors_allowed_headers == ("x-trace", "baggage")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CORS_ALLOWED_ORIGINS": "https://dash.example.com/"}, "CORS_ALLOWED_ORIGINS"),
        ({"CORS_ALLOWED_ORIGINS": "dash.example.com"}, "CORS_ALLOWED_ORIGINS"),
        ({"CORS_ALLOWED_ORIGINS": "*,https://a.example"}, "CORS_ALLOWED_ORIGINS"),
        ({"CORS_ALLOWED_ORIGINS": "null"}, "CORS_ALLOWED_ORIGINS"),
        ({"CORS_ALLOW_CREDENTIALS": "maybe"}, "CORS_ALLOW_CREDENTIALS"),
        ({"CORS_ALLOWED_HEADERS": "X-Good, X Bad"}, "CORS_ALLOWED_HEADERS"),
        ({"CORS_ALLOWED_HEADERS": "X-Colon:"}, "CORS_ALLOWED_HEADERS"),
        (
            {"CORS_ALLOWED_ORIGINS": "*", "CORS_ALLOW_CREDENTIALS": "true"},
            "CORS_ALLOW_CREDENTIALS",
        ),
    ],
)
def test_bad_cors_settings_are_named(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({**REQUIRED, **env})
    assert err.value.variable == variable
