//! The MCP surface: tools, resources, argument rules and reply shapes.

pub mod admin_calls;
pub mod analytics;
pub mod args;
pub mod configuration;
pub mod context;
pub mod reply;
pub mod resources;
pub mod server;
pub mod tools;
pub mod types;

pub use server::HandoffServer;
