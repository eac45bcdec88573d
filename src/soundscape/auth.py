"""How soundscape's libpq connections authenticate: never by a password sent in cleartext or as
an MD5 hash (a process posing as the server would learn it), and SCRAM only for a password
someone typed (docs/security.md). Used by the embedded server's own connections
(``soundscape.embedded_db``) and every engine (``soundscape.db.make_engine``).
"""

from __future__ import annotations

import psycopg

__all__ = ["NO_CLEARTEXT", "REQUIRE_AUTH_LIBPQ", "SCRAM_ONLY", "auth_options"]

#: libpq's ``require_auth`` for every connection soundscape makes: the server may ask for no
#: password (peer, trust, certificates), for SCRAM or for GSSAPI/SSPI, never for the password
#: in cleartext or as an MD5 hash (a process posing as the server would then learn it).
NO_CLEARTEXT = "!password,!md5"
#: ``require_auth`` when soundscape logs in with a password someone typed (web sign-in): SCRAM
#: only, which also proves the server knows the role's verifier (no ``trust`` server accepts
#: every password).
SCRAM_ONLY = "scram-sha-256"
#: The first libpq with ``require_auth`` (psycopg's binary wheels bring a newer one).
REQUIRE_AUTH_LIBPQ = 160000


def auth_options(require: str = NO_CLEARTEXT) -> dict[str, str]:
    """libpq connection options that hold soundscape's rule on passwords (``require``: which
    authentication the server may ask for). Empty with a libpq older than 16, which cannot
    refuse a server's request (docs/security.md)."""
    if psycopg.pq.version() < REQUIRE_AUTH_LIBPQ:
        return {}
    return {"require_auth": require}
