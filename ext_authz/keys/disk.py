"""The last good key set of each issuer on disk (`keys.cache_dir`), so that a restart
during an identity provider outage still verifies tokens.

Files are written atomically (a 0600 temporary file in the same directory, flushed,
then renamed over the old one), in a directory created 0700. A file that others may
write, or that is not a valid entry, is ignored with a warning, never trusted.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from ext_authz.keys.cache import MAX_ENTRY_CHARS, CachedJwks, CacheEntryError


class DiskCacheError(Exception):
    pass


class DiskKeyCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, store_id: str) -> Path:
        return self.directory / f"jwks-{store_id}.json"

    def load(self, store_id: str) -> CachedJwks | None:
        """The stored entry, or None when there is none. Raises `DiskCacheError`."""
        path = self.path(store_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DiskCacheError(f"cannot open {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise DiskCacheError(f"{path} is not a regular file")
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise DiskCacheError(f"{path} is writable by others")
            if hasattr(os, "getuid") and info.st_uid != os.getuid():
                raise DiskCacheError(f"{path} belongs to another user")
            data = handle.read(MAX_ENTRY_CHARS + 1)
        try:
            return CachedJwks.loads(data.decode("utf-8"))
        except (CacheEntryError, UnicodeDecodeError) as exc:
            raise DiskCacheError(f"{path}: {exc}") from None

    def save(self, store_id: str, entry: CachedJwks) -> Path:
        """Replace the stored entry atomically. Raises `OSError`."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.path(store_id)
        fd, temporary = tempfile.mkstemp(prefix=".jwks-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(entry.dumps().encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _sync_directory(self.directory)
        return target


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
