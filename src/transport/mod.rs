//! Transports: each runs as an actor under the root supervisor and turns
//! MCP traffic into calls on the server.

pub mod admin;
pub mod coalesce;
pub mod drain;
pub mod http;
pub mod http_auth;
pub mod http_caps;
pub mod http_limits;
pub mod http_log;
pub mod http_peer;
pub mod http_sessions;
pub mod json_replies;
pub mod jsonrpc_guard;
pub mod serve;
pub mod status;
pub mod stdio;
pub mod tls;
pub mod tool_calls;
