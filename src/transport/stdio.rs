//! The stdio transport actor. It serves one MCP connection on stdin/stdout
//! and stops when the client closes stdin, which shuts the service down.
//!
//! How the standard streams are driven matters to throughput (figures in
//! ops/BENCH.md): Node-based clients hand the child Unix socketpairs, so
//! sockets are driven as non-blocking `UnixStream`s on the tokio reactor;
//! FIFOs go through rmcp's `stdio_pipes()`; anything else (a terminal, a
//! file) through the blocking `stdio()` handles.

use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rmcp::ServiceExt;
use tokio::io::{AsyncRead, AsyncWrite};

use super::coalesce::CoalescingWriter;
use super::tool_calls::ToolCallTransport;
use crate::mcp::HandoffServer;

/// How long the end of a connection waits for its last replies to go out.
const FINISH_WRITES: std::time::Duration = std::time::Duration::from_secs(2);

pub const NAME: &str = "transport.stdio";

pub enum TransportMsg {
    /// The connection ended (EOF on stdin, or a broken pipe).
    Closed(String),
}

pub struct StdioTransport;

pub struct StdioArgs {
    pub server: HandoffServer,
    pub max_message_bytes: usize,
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

fn is_socket(fd: std::os::fd::BorrowedFd<'_>) -> Option<std::os::fd::OwnedFd> {
    let owned = fd.try_clone_to_owned().ok()?;
    let file = std::fs::File::from(owned);
    if file.metadata().ok()?.file_type().is_socket() {
        Some(file.into())
    } else {
        None
    }
}

fn socket_stream(fd: std::os::fd::OwnedFd) -> Option<tokio::net::UnixStream> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true).ok()?;
    tokio::net::UnixStream::from_std(std).ok()
}

/// The standard streams, driven the cheapest way their kind allows.
fn standard_streams() -> (Reader, Writer, &'static str) {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    if let (Some(i), Some(o)) = (is_socket(stdin.as_fd()), is_socket(stdout.as_fd())) {
        if let (Some(r), Some(w)) = (socket_stream(i), socket_stream(o)) {
            return (Box::new(r), Box::new(w), "socket");
        }
    }
    let (r, w) = rmcp::transport::io::stdio_pipes();
    (Box::new(r), Box::new(w), "pipe-or-blocking")
}

impl Actor for StdioTransport {
    type Msg = TransportMsg;
    type State = ();
    type Arguments = StdioArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TransportMsg>,
        args: StdioArgs,
    ) -> Result<(), ActorProcessingErr> {
        let (r, w, kind) = standard_streams();
        tracing::debug!(kind, "stdio transport");
        let (w, finish) = CoalescingWriter::new(w);
        let transport = ToolCallTransport::new(r, w, args.max_message_bytes);
        tokio::spawn(async move {
            let server = args.server.with_structured_content_in_transport();
            let reason = match server.serve(transport).await {
                Ok(running) => match running.waiting().await {
                    Ok(r) => format!("{r:?}"),
                    Err(e) => format!("join error: {e}"),
                },
                // A client that leaves (or a probe that only checks the
                // binary starts) before the handshake is not an error.
                Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => {
                    "the client closed stdin before the MCP handshake".to_string()
                }
                Err(e) => format!("the MCP handshake did not complete: {e}"),
            };
            // The last replies may still be buffered; a client that is gone
            // must not hold the shutdown up.
            let _ = tokio::time::timeout(FINISH_WRITES, finish.finish()).await;
            let _ = myself.cast(TransportMsg::Closed(reason));
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TransportMsg>,
        msg: TransportMsg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TransportMsg::Closed(reason) => {
                tracing::info!(reason, "stdio connection closed");
                myself.stop(Some("stdin closed".into()));
            }
        }
        Ok(())
    }
}
