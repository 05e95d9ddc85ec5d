//! shardstream-loader: the engine that follows a shard-index plan (fetch → cache → decode →
//! batch). It lands with the loader-engine issue; until then the crate only reserves its place
//! in the workspace so that `tests/`, `benches/` and `python/` can depend on it.
