"""Generated rows for the benchmark database: realistic lengths and value mixes (DECIMAL,
DATETIME, DATE, TEXT, non-ASCII and 4-byte characters), some NULLs.

Deterministic for a given seed and row counts, so two runs serve the same bytes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

ACC_ROWS: Final = 500
USER_ROWS: Final = 5_000

_FIRST: Final = (
    "Anna", "Ben", "Chiara", "Daniel", "Elif", "Felix", "Greta", "Hamza", "Ines", "Jonas",
    "Katarzyna", "Lukas", "Marie", "Noah", "Olga", "Paul", "Quentin", "Rosa", "Sven", "Tamara",
    "Uwe", "Valentina", "Wojciech", "Xenia", "Yusuf", "Zoë", "José", "Søren", "Łukasz", "Chloé",
    "Björn", "Ayşe", "Mateo", "Aiko", "Priya", "Oluwaseun", "Nguyễn", "Mikael", "Éloïse", "Ravi",
)  # fmt: skip
_LAST: Final = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
    "Hoffmann", "Kowalski", "Nowak", "Rossi", "Russo", "García", "Fernández", "Dubois", "Martin",
    "Johansson", "Andersen", "Çelik", "Kaya", "Tanaka", "Suzuki", "Patel", "Okafor", "Silva",
    "van der Berg", "O'Connor", "Nakamura", "Popescu", "Horváth", "Novák", "Ivanova", "Smith",
)  # fmt: skip
_COMPANY_WORDS: Final = (
    "Northwind", "Alpine", "Baltic", "Cobalt", "Delta", "Evergreen", "Falcon", "Granite",
    "Harbor", "Iris", "Juniper", "Kestrel", "Lumen", "Meridian", "Nordic", "Orchid", "Pioneer",
    "Quarry", "Riverside", "Summit", "Tandem", "Union", "Vertex", "Westwind", "Zenith", "Größe",
)  # fmt: skip
_COMPANY_KINDS: Final = (
    "Logistics", "Software", "Consulting", "Foods", "Energy", "Systems", "Pharma", "Textiles",
    "Media", "Analytics", "Robotics", "Holdings", "Labs", "Maschinenbau", "Réseaux", "Bank",
)  # fmt: skip
_COMPANY_FORMS: Final = ("GmbH", "AG", "Ltd", "Inc.", "S.A.", "B.V.", "Sp. z o.o.", "KG", "")
_NOTE_WORDS: Final = (
    "invoice", "overdue", "contract", "renewal", "escalated", "support", "ticket", "migrated",
    "legacy", "billing", "address", "changed", "contact", "requested", "callback", "discount",
    "approved", "pending", "review", "quarterly", "audit", "payment", "reminder", "sent", "via",
    "email", "phone", "customer", "prefers", "German", "English", "onboarding", "completed",
    "credit", "limit", "raised", "temporarily", "suspended", "until", "clarified", "Q3", "2024",
)  # fmt: skip
_DOMAINS: Final = ("example.com", "example.org", "mail.example.net", "corp.example.de")
_ROLES: Final = ("viewer", "viewer", "viewer", "operator", "operator", "admin", "auditor")
_STATUSES: Final = ("active",) * 8 + ("suspended", "closed")
_BCRYPT_ALPHABET: Final = string.ascii_letters + string.digits + "./"
_EPOCH: Final = dt.datetime(2015, 1, 1)


@dataclass(frozen=True, slots=True)
class Rows:
    acc: list[tuple[object, ...]]
    user: list[tuple[object, ...]]


ACC_COLUMNS: Final = ("id", "name", "status", "balance", "credit_limit", "created_at", "notes")
USER_COLUMNS: Final = (
    "id", "acc_id", "login", "full_name", "email", "role", "password_hash", "last_login",
    "birthday",
)  # fmt: skip


def generate(seed: int, acc_rows: int = ACC_ROWS, user_rows: int = USER_ROWS) -> Rows:
    rng = random.Random(seed)
    acc = [_acc(rng, i) for i in range(1, acc_rows + 1)]
    return Rows(acc=acc, user=_users(rng, user_rows, acc_rows))


def _sentence(rng: random.Random, low: int, high: int) -> str:
    target = rng.randint(low, high)
    words: list[str] = []
    length = 0
    while length < target:
        word = rng.choice(_NOTE_WORDS)
        words.append(word)
        length += len(word) + 1
    text = " ".join(words).capitalize() + "."
    # Now and then a character outside the BMP (4 bytes in UTF-8), as free text has.
    return text + " ✅🚀" if rng.random() < 0.05 else text


def _acc(rng: random.Random, acc_id: int) -> tuple[object, ...]:
    name = " ".join(
        part
        for part in (
            rng.choice(_COMPANY_WORDS),
            rng.choice(_COMPANY_KINDS),
            rng.choice(_COMPANY_FORMS),
        )
        if part
    )
    balance = Decimal(rng.randint(-5_000_000_000, 900_000_000_000)).scaleb(-4)
    credit = None if rng.random() < 0.25 else Decimal(rng.randint(0, 50_000_000)).scaleb(-2)
    created = _EPOCH + dt.timedelta(seconds=rng.uniform(0, 9 * 365 * 86400))
    notes = None if rng.random() < 0.4 else _sentence(rng, 20, 600)
    return (acc_id, f"{name} #{acc_id}", rng.choice(_STATUSES), balance, credit, created, notes)


def _users(rng: random.Random, count: int, accounts: int) -> list[tuple[object, ...]]:
    return [_user(rng, user_id, accounts, _salt_one_by_one) for user_id in range(1, count + 1)]


def user_stream(seed: int, accounts: int) -> Iterator[tuple[object, ...]]:
    """Endless `user` rows with ids 1, 2, ...: the first N are the same whatever is read after
    them, so a table can grow in place. Like `generate`'s rows, with a quicker draw of the hash
    characters (generate's own draw stays, so the other scenarios keep serving the same bytes)."""
    rng = random.Random(seed)
    for user_id in itertools.count(1):
        yield _user(rng, user_id, accounts, _salt_at_once)


def _salt_one_by_one(rng: random.Random) -> str:
    return "".join(rng.choice(_BCRYPT_ALPHABET) for _ in range(53))


def _salt_at_once(rng: random.Random) -> str:
    return "".join(rng.choices(_BCRYPT_ALPHABET, k=53))


def _user(
    rng: random.Random, user_id: int, accounts: int, salt: Callable[[random.Random], str]
) -> tuple[object, ...]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    login = f"{_ascii(first)}.{_ascii(last)}.{user_id}"
    full_name = None if rng.random() < 0.05 else f"{first} {last}"
    email = None if rng.random() < 0.05 else f"{login}@{rng.choice(_DOMAINS)}"
    salt_and_hash = salt(rng)
    password_hash = None if rng.random() < 0.02 else f"$2b$12${salt_and_hash}"
    last_login = (
        None
        if rng.random() < 0.1
        else (_EPOCH + dt.timedelta(seconds=rng.randint(0, 9 * 365 * 86400)))
    )
    birthday = (
        None
        if rng.random() < 0.3
        else dt.date(1950, 1, 1) + dt.timedelta(days=rng.randint(0, 55 * 365))
    )
    return (
        user_id,
        rng.randint(1, accounts),
        login,
        full_name,
        email,
        rng.choice(_ROLES),
        password_hash,
        last_login,
        birthday,
    )


def _ascii(name: str) -> str:
    kept = "".join(c for c in name.lower() if c in string.ascii_lowercase)
    return kept or "user"
