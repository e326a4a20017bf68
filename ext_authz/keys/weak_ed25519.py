"""Recognise Ed25519 public keys of small order.

A public key in the subgroup of order 1, 2, 4 or 8 makes signature verification
meaningless: with the identity point as the key, R = identity and S = 0 verify any
message, and no private key is involved. There are eight such points; their
encodings (with the sign bit of x either way, and the non-canonical encodings of
y = 0 and y = 1 as y + p) are refused here, as libsodium refuses them.
"""

from __future__ import annotations

# y coordinates (little-endian, sign bit cleared) of the points of small order
_SMALL_ORDER_Y = frozenset(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",  # y=0, order 4
        "0100000000000000000000000000000000000000000000000000000000000000",  # identity
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y=-1, order 2
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y=p (0)
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y=p+1 (1)
    )
)


def is_small_order_ed25519(public: bytes) -> bool:
    """Whether the 32-byte Ed25519 public key encoding is a point of small order."""
    if len(public) != 32:
        return False
    return public[:31] + bytes([public[31] & 0x7F]) in _SMALL_ORDER_Y
