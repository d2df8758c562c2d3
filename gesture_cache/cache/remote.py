"""Caches at fsspec URLs (`s3://bucket/prefix`, `gs://...`, `file:///...`, a plain path):
the filesystem opened with the credentials its own library finds (for S3: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL, ~/.aws), `--storage-options JSON` for
anything else, and errors that name the URL but never a secret."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from gesture_cache.cache.manifest import MANIFEST, validate_manifest
from gesture_cache.common.errors import CacheError, ConfigError, GestureCacheError

EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # pip extra of a protocol

# S3 requests that get no answer fail instead of hanging: botocore tries each request once
# (s3fs itself retries a timed-out call 5 times), each read waits at most 15 s. Options the
# user gives (`--storage-options '{"config_kwargs": {...}}'`) win.
S3_CONFIG = {"connect_timeout": 5, "read_timeout": 15, "retries": {"max_attempts": 1}}


def is_url(text: str | Path) -> bool:
    return "://" in str(text)


def redacted(url: str) -> str:
    """The URL without its credentials, whatever characters they hold (see `credentials`)."""
    return credentials(url)[2]


def credentials(url: str) -> tuple[str | None, str | None, str]:
    """(user, password, the URL without them), percent-decoded. A secret may hold `/`, `@`,
    `:` or `%` (AWS secret keys hold `/`), so the user part is not cut at the first `/` or
    `@`: what lies between `scheme://` and the last `@` is taken for credentials when it
    holds a `:` or no `/` (an `@` inside a path, `s3://bucket/v@2`, stays)."""
    url = str(url)
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return None, None, url
    user_part, _, place = rest.rpartition("@")
    if ":" not in user_part and "/" in user_part:
        return None, None, url
    user, colon, password = user_part.partition(":")
    return unquote(user), unquote(password) if colon else None, f"{scheme}://{place}"


def local_file_url(url: str) -> str:
    """`file://localhost/PATH` (RFC 8089) as `file:///PATH`; a file URL naming another host
    is refused (fsspec would take the host for a folder here)."""
    scheme, separator, rest = url.partition("://")
    if separator and scheme.lower() == "file" and not rest.startswith("/"):
        host, slash, path = rest.partition("/")
        if host.lower() != "localhost" or not slash:
            raise ConfigError(
                f"{redacted(url)}: a file:// URL names a path on this machine "
                "(file:///PATH or file://localhost/PATH), not one on host "
                f"{redacted(host)!r}"
            )
        return f"file:///{path}"
    return url


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
    endpoint: str = ""  # " (endpoint HOST)" of an S3 URL, for messages of failures

    def failure(self, error: Exception) -> GestureCacheError:
        return storage_error(error, self.url + self.endpoint)

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
            raise self.failure(error) from None
        try:
            return validate_manifest(json.loads(raw), Path(MANIFEST))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CacheError(f"{self.url}/{MANIFEST} is not JSON") from None
        except GestureCacheError as error:
            raise CacheError(f"{self.url}: {error}") from None


def open_remote(url: str, options: dict | None = None) -> Remote:
    import fsspec

    shown = redacted(url)
    url = local_file_url(str(url))
    options = dict(options or {})
    if url.split("://")[0] in ("s3", "s3a"):
        options["config_kwargs"] = {**S3_CONFIG, **options.get("config_kwargs", {})}
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
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
    return Remote(fs, root.rstrip("/") or "/", shown, endpoint_note(url, options))


def endpoint_note(url: str, options: dict) -> str:
    """Where an S3 URL's requests go, for messages: ` (endpoint HOST)`, else nothing."""
    if url.split("://")[0] not in ("s3", "s3a"):
        return ""
    endpoint = (
        options.get("endpoint_url")
        or options.get("client_kwargs", {}).get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    return f" (endpoint {redacted(endpoint)})" if endpoint else " (endpoint: AWS S3)"


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
