//! `handoff` as a library: everything the binary (`src/main.rs`) runs, so
//! the fuzz targets (`fuzz/`) can drive the parsers the server uses.

pub mod analysis;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod jobs;
pub mod logging;
pub mod mcp;
pub mod paths;
pub mod settings;
pub mod storage;
pub mod transport;
