"""The one base64url reader: strict and canonical (RFC 7515 section 2), joserfc's.

No padding, no `+` or `/`, no stray bits in the last character: a value has one
encoding, so two different strings never decode to the same bytes. Tokens (`tokens/`)
and keys (`keys/`) both read base64url through here.
"""

from __future__ import annotations

from joserfc.util import urlsafe_b64decode


def decode(text: str) -> bytes:
    """The bytes of `text`; raises `ValueError` when it is not canonical base64url."""
    try:
        return urlsafe_b64decode(text.encode("ascii"))
    except ValueError:  # binascii.Error, or UnicodeEncodeError for a non-ASCII text
        raise ValueError("not canonical base64url") from None
