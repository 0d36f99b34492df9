"""TLS to the database, configured as MySQL's own client is (`--ssl-mode`, `--ssl-ca`,
`--ssl-cert`, `--ssl-key`): the modes, the client context each one needs, and the words for a
handshake that failed. No driver here (drivers.py applies the context)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

MODES: Final = ("disabled", "preferred", "required", "verify_ca", "verify_identity")
# The modes that refuse a connection without TLS, and those that check the certificate.
REQUIRING: Final = frozenset(MODES[2:])
VERIFYING: Final = frozenset(MODES[3:])


class TlsFileError(Exception):
    """A certificate or key file that cannot be used; `variable` names the setting."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(problem)
        self.variable = variable


@dataclass(frozen=True, slots=True)
class Tls:
    """What a new connection is asked to do: `context` None means no TLS at all."""

    mode: str
    context: ssl.SSLContext | None

    @property
    def required(self) -> bool:
        return self.mode in REQUIRING


def client_tls(mode: str, ca: str = "", cert: str = "", key: str = "") -> Tls:
    """The TLS of `mode` with these files (paths, "" when unset); TlsFileError when one of
    them cannot be loaded."""
    if mode == "disabled":
        return Tls(mode, None)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if mode in VERIFYING:
        _load("DB_SSL_CA", ca, lambda: context.load_verify_locations(ca))
        context.check_hostname = mode == "verify_identity"
    else:
        # preferred and required encrypt but, as MySQL's client, trust any certificate.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if key and not cert:
        raise TlsFileError("DB_SSL_KEY", "needs DB_SSL_CERT, the certificate it belongs to")
    if cert:
        _load("DB_SSL_CERT", cert, lambda: _certificates(cert))

        def load_chain() -> None:
            context.load_cert_chain(cert, key or None)

        if key:
            _load("DB_SSL_KEY", key, load_chain)
        else:  # the key may be in the certificate's own file
            hint = "no private key in it, and DB_SSL_KEY is unset"
            _load("DB_SSL_CERT", cert, load_chain, hint)
    return Tls(mode, context)


def _certificates(path: str) -> None:
    """Raise unless `path` holds PEM certificates (told apart from a bad key this way)."""
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(path)


def _load(variable: str, path: str, load: Callable[[], None], hint: str = "") -> None:
    try:
        load()
    except FileNotFoundError:
        raise TlsFileError(variable, f"cannot read {path!r}: no such file") from None
    except PermissionError:
        raise TlsFileError(variable, f"cannot read {path!r}: permission denied") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        # Never the key's content: OpenSSL's reason ("KEY_VALUES_MISMATCH", "NO_START_LINE").
        reason = hint or getattr(exc, "reason", None) or type(exc).__name__
        raise TlsFileError(variable, f"cannot use {path!r}: {reason}") from None


def handshake_failure(exc: BaseException) -> str | None:
    """Why a connection failed in its TLS handshake, in words for the operator; None when the
    failure was not TLS's. Looks through the causes (drivers wrap socket errors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            message = str(seen.verify_message or seen.reason or seen)
            if "mismatch" in message.lower():
                return f"TLS: the server's certificate does not name this host ({message})"
            return f"TLS: the server's certificate is not trusted by DB_SSL_CA ({message})"
        if isinstance(seen, ssl.SSLError):
            return f"TLS: the handshake failed ({seen.reason or seen})"
        if _is_no_tls(seen):
            return f"TLS: {NO_TLS_TEXT}"
        seen = seen.__cause__ or seen.__context__
    return None


# MySQL's client error CR_SSL_CONNECTION_ERROR, raised by drivers.py when a requiring mode
# meets a server that does not offer TLS.
NO_TLS_ERROR: Final = 2026
NO_TLS_TEXT: Final = "the server offers no TLS, and DB_SSL_MODE requires it"


def _is_no_tls(exc: BaseException) -> bool:
    return exc.args == (NO_TLS_ERROR, NO_TLS_TEXT)
