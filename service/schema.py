"""What start-up introspection says of a table, and how to read MySQL's column declarations.

db.py builds these types, resources.py writes SQL from them and openapi.py describes their
values; neither the driver nor HTTP is imported here, so those readers need neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# Bits of each MySQL integer type; the signed and unsigned ranges follow.
_INTEGER_BITS: Final = {
    "tinyint": 8,
    "smallint": 16,
    "mediumint": 24,
    "int": 32,
    "integer": 32,
    "bigint": 64,
}
INTEGER_TYPES: Final = frozenset(_INTEGER_BITS)
_DECIMAL: Final = re.compile(r"(?:decimal|numeric)\((\d+),(\d+)\)", re.IGNORECASE)
_MEMBER: Final = re.compile(r"'((?:[^']|'')*)'")


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    data_type: str  # information_schema DATA_TYPE, lower case: int, varchar, decimal, ...
    # Full type as declared: "int(10) unsigned", "decimal(18,4)", "enum('Active','Closed')";
    # not lower-cased, so ENUM and SET members keep the spelling the rows come back with.
    column_type: str
    max_length: int | None  # characters, for character types
    nullable: bool = True  # information_schema IS_NULLABLE; unknown means it may be null
    charset: str | None = None  # CHARACTER_SET_NAME of a character column, lower case

    @property
    def unsigned(self) -> bool:
        declared = self.column_type.lower()
        return "unsigned" in declared or "zerofill" in declared  # ZEROFILL implies UNSIGNED

    def integer_range(self) -> tuple[int, int]:
        """The lowest and highest value of an integer column (a bigint's for other types)."""
        bits = _INTEGER_BITS.get(self.data_type, 64)
        if self.unsigned:
            return 0, 2**bits - 1
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def decimal_digits(self) -> tuple[int, int] | None:
        """(precision, scale) of a DECIMAL(p,s) or NUMERIC(p,s); None for any other declaration."""
        match = _DECIMAL.match(self.column_type)
        return None if match is None else (int(match[1]), int(match[2]))

    def members(self) -> list[str]:
        """The members of an ENUM or SET, spelled as its rows come back."""
        return [member.replace("''", "'") for member in _MEMBER.findall(self.column_type)]


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[ColumnInfo, ...]
    primary_key: tuple[str, ...]
    # Columns that lead an index able to find rows equal to a value (not FULLTEXT or SPATIAL):
    # the second column of a composite index cannot serve a lookup on its own.
    indexed: frozenset[str] = frozenset()


def quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
