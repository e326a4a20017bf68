"""The one base64url reader: strict and canonical (RFC 7515 section 2).

No padding, no `+` or `/`, no stray bits in the last character: a value has one
encoding, so two different strings never decode to the same bytes. Tokens (`tokens/`)
and keys (`keys/`) both read base64url through here. The decoding itself is the
standard library's C decoder in strict mode; this module only maps the URL alphabet
onto the standard one (with `+`, `/` and `=` mapped to a byte it refuses) and checks
the last character, so a token's segments cost a copy and a table lookup each.
"""

from __future__ import annotations

import binascii
from typing import Final

# `-` and `_` become the standard alphabet's `+` and `/`; a `+`, `/` or `=` in the
# input becomes `!`, which the strict decoder refuses
_TO_STANDARD: Final = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING: Final = (b"", b"", b"==", b"=")
# the characters that may end a text of length 2 or 3 mod 4: those whose unused low
# bits are zero (4 bits after 2 characters' 12, 2 bits after 3 characters' 18)
_ENDINGS: Final = (b"", b"", b"AQgw", b"AEIMQUYcgkosw048")


def decode(text: str) -> bytes:
    """The bytes of `text`; raises `ValueError` when it is not canonical base64url."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("not canonical base64url") from None
    tail = len(raw) % 4
    if tail == 1 or (tail and raw[-1] not in _ENDINGS[tail]):
        raise ValueError("not canonical base64url")
    try:
        return binascii.a2b_base64(raw.translate(_TO_STANDARD) + _PADDING[tail], strict_mode=True)
    except binascii.Error:
        raise ValueError("not canonical base64url") from None
