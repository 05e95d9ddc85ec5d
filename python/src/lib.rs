//! The `shardstream._native` extension module (PyO3). The Python package lands with its issue;
//! this placeholder keeps the workspace layout in place.
