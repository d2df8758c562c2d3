"""Caches at fsspec URLs (`s3://bucket/prefix`, `gs://...`, `file:///...`, a plain path):
the filesystem opened with the credentials its own library finds (for S3: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL, ~/.aws), `--storage-options JSON` for
anything else, and errors that name the URL but never a secret."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from gesture_cache.cache.manifest import MANIFEST, validate_manifest
from gesture_cache.common.errors import CacheError, ConfigError, GestureCacheError

EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # pip extra of a protocol


def is_url(text: str | Path) -> bool:
    return "://" in str(text)


def redacted(url: str) -> str:
    """The URL without a user:password@ part."""
    return re.sub(r"://[^/@]*@", "://", str(url))


def storage_options(text: str | None) -> dict:
    """`--storage-options JSON`: an object of options for the URL's filesystem."""
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--storage-options is not JSON ({error.msg})") from None
    if not isinstance(options, dict):
        raise ConfigError("--storage-options must be a JSON object, e.g. '{\"anon\": true}'")
    return options


@dataclass
class Remote:
    """A folder at a URL: its filesystem and the path on it."""

    fs: object
    root: str
    url: str  # as given, redacted: for messages

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def manifest(self) -> dict | None:
        """The validated manifest there, or None when there is none; every shard name it
        gives must be a plain name inside the prefix."""
        try:
            raw = self.fs.cat_file(self.path(MANIFEST))
        except FileNotFoundError:
            return None
        except Exception as error:  # noqa: BLE001 - the storage library's own errors
            raise storage_error(error, self.url) from None
        try:
            return validate_manifest(json.loads(raw), Path(MANIFEST))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CacheError(f"{self.url}/{MANIFEST} is not JSON") from None
        except GestureCacheError as error:
            raise CacheError(f"{self.url}: {error}") from None


def open_remote(url: str, options: dict | None = None) -> Remote:
    import fsspec

    shown = redacted(url)
    try:
        fs, root = fsspec.core.url_to_fs(str(url), **(options or {}))
    except ImportError as error:
        protocol = str(url).split("://")[0]
        extra = EXTRAS.get(protocol)
        hint = f"pip install 'gesture_cache[{extra}]'" if extra else "install its fsspec package"
        said = f"no module {error.name!r}" if error.name else str(error).splitlines()[0]
        raise ConfigError(f"{shown}: {protocol}:// needs a package ({said}): {hint}") from None
    except ValueError as error:
        raise ConfigError(f"{shown}: {error}") from None
    except Exception as error:  # noqa: BLE001 - filesystems that connect as they open (ftp, sftp)
        raise storage_error(error, shown) from None
    return Remote(fs, root.rstrip("/"), shown)


def storage_error(error: Exception, url: str) -> GestureCacheError:
    """One line for what the storage said: a missing bucket, denied access, no connection."""
    text = redacted(str(error).splitlines()[0]) if str(error) else type(error).__name__
    if isinstance(error, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return GestureCacheError(
            f"{url}: access denied ({text}); check the credentials (AWS_PROFILE, "
            "AWS_ACCESS_KEY_ID, ...) and that they may read and write this bucket"
        )
    if isinstance(error, FileNotFoundError) or "NoSuchBucket" in text:
        return GestureCacheError(f"{url}: the bucket or folder does not exist ({text})")
    return GestureCacheError(
        f"{url}: the storage failed ({type(error).__name__}: {text}); check the URL, the "
        "endpoint (AWS_ENDPOINT_URL) and the connection, then run the same command again"
    )
