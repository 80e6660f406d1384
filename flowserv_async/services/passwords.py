"""Password hashing: salted scrypt, run in a worker thread so the event loop never waits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import cache

import anyio.to_thread

# scrypt cost: N=2**14, r=8, p=1 (16 MiB, tens of milliseconds), OWASP's minimum.
# The parameters are stored with each hash, so raising them later keeps old hashes valid.
_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
_SCHEME = "scrypt"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _hash(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=64 * 1024 * 1024
    )


def _hash_new(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _hash(password, salt, _N, _R, _P, _DKLEN)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


@cache
def _dummy_hash() -> str:
    return _hash_new(secrets.token_urlsafe(16))


def _verify(password: str, encoded: str | None) -> bool:
    if encoded is None:
        # Unknown user: spend the same time as for a wrong password (no account
        # enumeration by timing), then fail.
        _verify(password, _dummy_hash())
        return False
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = _hash(password, base64.b64decode(salt), int(n), int(r), int(p), len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


async def hash_password(password: str) -> str:
    """Return a salted scrypt hash of ``password`` (computed in a worker thread)."""
    return await anyio.to_thread.run_sync(_hash_new, password)


async def verify_password(password: str, encoded: str | None) -> bool:
    """Check ``password`` against a hash from :func:`hash_password` in constant time.

    ``encoded=None`` (no such user) takes as long as a wrong password and returns False.
    """
    return await anyio.to_thread.run_sync(_verify, password, encoded)
