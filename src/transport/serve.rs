//! The accept loop of the daemon's listeners: axum's `serve`, plus what a
//! listener on a network needs. A client must send its request head within
//! `header_timeout` (a client trickling bytes is dropped, not served
//! forever); at most `max_connections` are open at once (the next is
//! closed on accept); Nagle is off (a reply written in two pieces would
//! otherwise wait ~40 ms for the client's delayed ACK). With TLS, the
//! handshake runs in the connection's task and must also finish within
//! `header_timeout`. On stop: no more accepts, open connections finish
//! within `grace`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::tls::Tls;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub grace: Duration,
}

/// Serve `app` on `listener` (over TLS when `tls` is given) until `stop`;
/// then drain (see the module).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let (tcp, remote) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep going.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(remote = %remote.ip(), limit = limits.max_connections, "connection closed: at the connection cap");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = app.clone().map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            req.map(Body::new)
        });
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            match acceptor {
                None => connection(tcp, service, limits, watcher).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await;
                    match handshake {
                        Ok(Ok(stream)) => connection(stream, service, limits, watcher).await,
                        // Failed handshakes (old protocol versions, plain
                        // HTTP, scanners) are routine: debug, not warn.
                        Ok(Err(e)) => {
                            tracing::debug!(remote = %remote.ip(), error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(remote = %remote.ip(), "TLS handshake timed out")
                        }
                    }
                }
            }
            drop(permit);
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.grace) => {
            tracing::warn!(grace = ?limits.grace, "connections still open after the shutdown grace; closing");
        }
    }
}

/// One HTTP/1.1 or HTTP/2 connection, watched for the drain.
async fn connection<I, S>(io: I, service: S, limits: Limits, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = axum::response::Response>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
        .into_owned();
    let _ = watcher.watch(conn).await;
}
