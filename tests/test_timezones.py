"""Times a browser reads right, from a server whose own time zone is not UTC (+05:00): TIMESTAMP
in UTC with Z, DATETIME with its offset in DB_DATETIME_ZONE (daylight saving time and its two
edge cases included) or without one, zero dates as the server's text; with both drivers, as the
OpenAPI document says; and what a bad DB_DATETIME_ZONE does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
from pymysql.constants import FIELD_TYPE

from devtools.mariadb import PrivateMariaDB, can_install_packages, connect, create_database
from service.app import create_app
from service.db import Database
from service.drivers import NAMES
from service.encoding import encode
from service.settings import Settings, load_settings
from service.timezones import datetime_zone, row_decoders

from .conftest import base_env, query
from .test_main import run_service
from .test_openapi import Contract

SERVER_ZONE = "+05:00"
DATABASE = "cmapi_timezones"
TABLE = "times"
ZONES = ("", "Europe/Berlin", "UTC")

# id: (ts, ts6, dt, dt6) as the application wrote them, in a session in the server's zone.
STORED: dict[int, tuple[str | None, ...]] = {
    1: ("2024-01-15 17:30:00", "2024-03-01 02:00:00.25", "2024-01-15 13:30:00",
        "2024-01-15 13:30:00.000001"),
    2: ("2024-07-01 05:00:00", "2024-07-01 05:00:00.000000", "2024-07-01 02:00:00",
        "2024-07-01 23:59:59.999999"),
    # Europe/Berlin's clocks go back at 03:00 (02:30 happens twice) and forward at 02:00 (02:30
    # never happens).
    3: (None, None, "2024-10-27 02:30:00", "2024-03-31 02:30:00"),
    4: (None, None, None, None),
    5: ("0000-00-00 00:00:00", "0000-00-00 00:00:00.000000", "0000-00-00 00:00:00",
        "2024-00-00 00:00:00"),
}  # fmt: skip
# id: (ts, ts6) as sent, whatever DB_DATETIME_ZONE: the instant in UTC.
TIMESTAMPS: dict[int, tuple[str | None, ...]] = {
    1: ("2024-01-15T12:30:00Z", "2024-02-29T21:00:00.250000Z"),
    2: ("2024-07-01T00:00:00Z", "2024-07-01T00:00:00Z"),
    3: (None, None),
    4: (None, None),
    5: ("0000-00-00 00:00:00", "0000-00-00 00:00:00.000000"),
}
# DB_DATETIME_ZONE: {id: (dt, dt6) as sent}.
DATETIMES: dict[str, dict[int, tuple[str | None, ...]]] = {
    "": {
        1: ("2024-01-15T13:30:00", "2024-01-15T13:30:00.000001"),
        2: ("2024-07-01T02:00:00", "2024-07-01T23:59:59.999999"),
        3: ("2024-10-27T02:30:00", "2024-03-31T02:30:00"),
    },
    "Europe/Berlin": {
        1: ("2024-01-15T13:30:00+01:00", "2024-01-15T13:30:00.000001+01:00"),
        2: ("2024-07-01T02:00:00+02:00", "2024-07-01T23:59:59.999999+02:00"),
        # fold=0: the earlier of the two (still summer time); the offset before the gap.
        3: ("2024-10-27T02:30:00+02:00", "2024-03-31T02:30:00+01:00"),
    },
    "UTC": {
        1: ("2024-01-15T13:30:00Z", "2024-01-15T13:30:00.000001Z"),
        2: ("2024-07-01T02:00:00Z", "2024-07-01T23:59:59.999999Z"),
        3: ("2024-10-27T02:30:00Z", "2024-03-31T02:30:00Z"),
    },
}
# id: (dt, dt6) as sent, whatever DB_DATETIME_ZONE: no value, or no calendar date.
DATETIMES_IN_EVERY_ZONE: dict[int, tuple[str | None, ...]] = {
    4: (None, None),
    5: ("0000-00-00 00:00:00", "2024-00-00 00:00:00.000000"),
}


@pytest.fixture(scope="module")
def zoned_server() -> Iterator[PrivateMariaDB]:
    """A MariaDB whose global time zone is +05:00, holding TABLE written in that zone."""
    options = [f"--default-time-zone={SERVER_ZONE}"]
    with PrivateMariaDB(allow_install=can_install_packages(), options=options) as server:
        create_database(server.address, DATABASE)
        conn = connect(server.address, timeout=10.0, database=DATABASE)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT @@session.time_zone")
                assert cursor.fetchall() == ((SERVER_ZONE,),)  # the writer's zone is the server's
                cursor.execute(
                    f"""CREATE TABLE {TABLE} (
                        id INT NOT NULL PRIMARY KEY,
                        ts TIMESTAMP NULL, ts6 TIMESTAMP(6) NULL,
                        dt DATETIME NULL, dt6 DATETIME(6) NULL)"""
                )
                for key, values in STORED.items():
                    cursor.execute(
                        f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s, %s)", (key, *values)
                    )
        finally:
            conn.close()
        yield server


@pytest.fixture
def zoned_settings(zoned_server: PrivateMariaDB) -> Callable[..., Settings]:
    def make(**overrides: str) -> Settings:
        env = base_env(zoned_server.address, DATABASE) | {"RESOURCES": TABLE}
        return load_settings(env | overrides)

    return make


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("driver", NAMES)
async def test_times_are_sent_in_utc_or_the_configured_zone(
    aiohttp_client: Callable[..., Any],
    zoned_settings: Callable[..., Settings],
    driver: str,
    zone: str,
) -> None:
    app = create_app(zoned_settings(DB_DRIVER=driver, DB_DATETIME_ZONE=zone))
    client = await aiohttp_client(app)
    datetimes = DATETIMES[zone] | DATETIMES_IN_EVERY_ZONE
    expected = {key: (*TIMESTAMPS[key], *datetimes[key]) for key in STORED}

    rows = await (await client.get(f"/{TABLE}/")).json()
    assert {row["id"]: (row["ts"], row["ts6"], row["dt"], row["dt6"]) for row in rows} == expected
    # A statement with bound values (a keyset page, one row) reads them alike.
    page = await (await client.get(f"/{TABLE}/?after=2&limit=1")).json()
    one = await (await client.get(f"/{TABLE}/1")).json()
    assert [(page[0]["ts"], page[0]["dt6"]), (one["ts6"], one["dt"])] == [
        (expected[3][0], expected[3][3]),
        (expected[1][1], expected[1][2]),
    ]

    # What the document promises is exactly what is sent, zero dates included.
    contract = Contract(await (await client.get("/openapi.json")).json())
    for row in rows:
        contract.validate(f"/components/schemas/{TABLE}.row", row)


@pytest.mark.parametrize("zone", ZONES)
async def test_the_document_gives_format_date_time_only_with_an_offset(
    aiohttp_client: Callable[..., Any], zoned_settings: Callable[..., Settings], zone: str
) -> None:
    client = await aiohttp_client(create_app(zoned_settings(DB_DATETIME_ZONE=zone)))
    contract = Contract(await (await client.get("/openapi.json")).json())
    properties = contract.lookup(f"/components/schemas/{TABLE}.row/properties")
    ts, dt = properties["ts"]["anyOf"][0], properties["dt6"]["anyOf"][0]
    assert ts["format"] == "date-time"
    assert ts["pattern"].endswith("Z$")
    assert ("format" in dt) is bool(zone)
    assert zone in properties["dt6"]["description"]

    def valid(column: str, value: str) -> bool:
        schema = f"/components/schemas/{TABLE}.row/properties/{column}"
        try:
            contract.validate(schema, value)
        except jsonschema.ValidationError:
            return False
        return True

    assert not valid("ts", "2024-01-15T12:30:00")
    assert not valid("ts", "2024-01-15T12:30:00+00:00")
    assert valid("dt", "2024-01-15T13:30:00+01:00") is bool(zone)
    assert valid("dt", "2024-01-15T13:30:00") is not bool(zone)
    assert not valid("dt", "2024-01-15 13:30:00")  # the server's text only for no date


@pytest.mark.parametrize("limit", ["60", "0"])
@pytest.mark.parametrize("driver", NAMES)
async def test_each_session_runs_in_utc_set_up_by_one_statement(
    zoned_settings: Callable[..., Settings], driver: str, limit: str
) -> None:
    db = Database(zoned_settings(DB_DRIVER=driver, DB_MAX_STATEMENT_SECONDS=limit))
    conn = await db._connect()
    try:
        zones = await query(
            conn, "SELECT @@session.time_zone, @@global.time_zone, @@session.max_statement_time"
        )
        assert zones == [("+00:00", SERVER_ZONE, float(limit))]
        status = await query(conn, "SHOW SESSION STATUS LIKE 'Com_set_option'")
        assert status == [("Com_set_option", "1")]
    finally:
        await conn.ensure_closed()


@pytest.mark.parametrize(
    ("text", "utc", "berlin"),
    [
        ("2024-07-01 12:00:00", "2024-07-01T12:00:00Z", "2024-07-01T12:00:00+02:00"),
        ("2024-07-01 12:00:00.1", "2024-07-01T12:00:00.100000Z",
         "2024-07-01T12:00:00.100000+02:00"),
        ("2024-01-01 00:00:00.123", "2024-01-01T00:00:00.123000Z",
         "2024-01-01T00:00:00.123000+01:00"),
        ("9999-12-31 23:59:59.999999", "9999-12-31T23:59:59.999999Z",
         "9999-12-31T23:59:59.999999+01:00"),
        # Before standard time, Berlin's offset had seconds (+00:53:28): RFC 3339 has none.
        ("1000-01-01 00:00:00", "1000-01-01T00:00:00Z", "1000-01-01T00:00:00+00:53"),
        # Stored under sql_mode ALLOW_INVALID_DATES.
        ("2024-02-31 00:00:00", "2024-02-31 00:00:00", "2024-02-31 00:00:00"),
    ],
)  # fmt: skip
def test_the_converters_read_every_fraction_and_keep_what_is_no_date(
    text: str, utc: str, berlin: str
) -> None:
    timestamp = row_decoders(None)[FIELD_TYPE.TIMESTAMP]
    datetime = row_decoders(datetime_zone("Europe/Berlin"))[FIELD_TYPE.DATETIME]
    assert (encode(timestamp(text)), encode(datetime(text))) == (
        f'"{utc}"'.encode(),
        f'"{berlin}"'.encode(),
    )
    assert FIELD_TYPE.DATETIME not in row_decoders(None)  # no zone: the driver's own, naive


def test_an_unknown_zone_stops_the_start_naming_the_variable(
    zoned_server: PrivateMariaDB,
) -> None:
    env = base_env(zoned_server.address, DATABASE) | {"DB_DATETIME_ZONE": "Europe/Berln"}
    result = run_service(env)
    assert result.code == 2
    assert "DB_DATETIME_ZONE: expected an IANA time zone name" in result.stderr
    assert "'Europe/Berln'" in result.stderr
