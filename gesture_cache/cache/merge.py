"""`gesture-cache merge`: caches of one extractor joined into a new one, shards copied."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gesture_cache.cache.manifest import (
    SCHEMA_VERSION,
    ExtractorRecord,
    extractor_differences,
    read_failures,
    read_manifest,
)
from gesture_cache.cache.shard import read_shard, read_shard_recordings
from gesture_cache.cache.verify import verified_manifest
from gesture_cache.cache.writer import CacheWriter
from gesture_cache.common.errors import CacheError
from gesture_cache.common.files import (
    LOCK,
    fsync_dir,
    make_parents,
    refuse_link,
    remove_made,
    staging_folder,
)


def merge_caches(sources: list[str | Path], out: str | Path, compression: str = "gzip") -> dict:
    """Combine caches built with the same extractor (e.g. `--num-shards` parts) into `out`
    (one cache given: a copy, e.g. stored with another `compression`).

    Every source is verified and every recording id checked before anything is written; the
    merged cache is built in a temporary folder beside `out` and renamed at the end, so a
    failed merge leaves no partial cache behind."""
    out = Path(out)
    refuse_link(out, "--out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CacheError(f"--out {out} exists and is not empty; merge into a new folder")
    manifests = [verified_manifest(s) for s in sources]
    first = manifests[0]
    for source, manifest in zip(sources, manifests):
        if manifest["schema_version"] != SCHEMA_VERSION:
            raise CacheError(
                f"{source} is a schema-{manifest['schema_version']} cache; merge needs schema "
                f"{SCHEMA_VERSION} caches (versions are never mixed): re-extract it"
            )
        if manifest["fingerprint"] != first["fingerprint"]:
            differ = extractor_differences(first["extractor"], manifest["extractor"])
            raise CacheError(
                f"{source} was built with another extractor than {sources[0]} (differs in: "
                f"{', '.join(differ) or 'fingerprint'}); merge caches of one extractor"
            )
        if manifest["dtype"] != first["dtype"]:
            raise CacheError(
                f"{source} stores {manifest['dtype']} features, {sources[0]} "
                f"{first['dtype']}; merge caches of one dtype"
            )
    owner: dict[str, str] = {}
    for source, manifest in zip(sources, manifests):
        for shard in manifest["shards"]:
            content = read_shard(Path(source) / shard["file"], SCHEMA_VERSION)
            for recording_id in content.recordings["recording_id"]:
                if recording_id in owner:
                    raise CacheError(
                        f"recording {recording_id!r} is in both {owner[recording_id]} and {source}"
                    )
                owner[recording_id] = str(source)
    made = make_parents(out)
    staging = staging_folder(out)
    try:
        record = ExtractorRecord(
            first["extractor"],
            first["feature_dim"],
            files=first.get("files", {}),
            software=first.get("created_by", {}),
        )
        writer = CacheWriter(
            staging, record, dtype=first["dtype"], shard_size=10**9, compression=compression
        )
        with writer:
            for source, manifest in zip(sources, manifests):
                for shard in manifest["shards"]:
                    writer.software = shard.get("software", {})
                    writer.pending = read_shard_recordings(Path(source) / shard["file"])
                    writer.flush()
                for key, record in read_failures(source).items():
                    if key.split("#", 1)[0] not in writer.done:
                        writer.failures[key] = record
        (staging / LOCK).unlink(missing_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        remove_made(made)
        raise
    return read_manifest(out)
