"""The feature cache on disk: manifest, shard format (schema 2; schema 1 read-only), the
crash-safe writer, reading, verify, merge, repair and Parquet export. Imports `common`,
`video`, `sources`."""
