//! A transport that reads `tools/call` requests itself and hands every
//! other line to rmcp's own.
//!
//! rmcp parses each incoming line as a `JsonRpcMessage`, whose shape (an
//! untagged message, a request flattened into it, params flattened again
//! beside `_meta`) makes serde buffer the whole message, the entry's
//! content included, before building it: about a seventh of the server's
//! CPU per call (callgrind, `ops/bench` load on PostgreSQL). A tool call
//! has one fixed shape, so it is read straight into rmcp's typed request
//! here — the same value rmcp's parser would build (a unit test compares).
//!
//! Any other line — initialize, lists, resources, responses, notifications,
//! malformed input, a call with fields rmcp does not know — goes to an unchanged
//! `AsyncRwTransport` through an in-memory pipe, so everything rmcp does
//! with it (compatibility filtering, "Invalid Request" replies, ignoring
//! unparsable input) stays rmcp's. Order is kept: each line handed over is
//! followed by a marker (a `notifications/cancelled` naming a per-process
//! random id, which no client can know), and nothing new is read until
//! rmcp has given back everything up to the last marker.
//!
//! Tool results go out the other way round: a result marked
//! `reply::STRUCTURED_IS_TEXT` is written here, as rmcp would write it but
//! with its text's bytes written a second time as `structuredContent`
//! (see `crate::mcp::reply`); everything else is rmcp's to write.
//!
//! `receive` may be cancelled at any await (rmcp polls it in a `select!`),
//! so all of its progress lives in the struct: a partial line stays in
//! `line`, and a line is dealt with (parsed, or written to the pipe, which
//! always has room) without awaiting.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use futures::future::Either;
use rmcp::model::{
    CallToolRequestMethod, CallToolRequestParams, CallToolResult, ClientNotification,
    ClientRequest, ErrorData, JsonRpcMessage, JsonRpcRequest, JsonRpcResponse, JsonRpcVersion2_0,
    Request, RequestId, ServerResult,
};
use rmcp::service::{RoleServer, RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::Transport;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};

use super::jsonrpc_guard::{self, Verdict};
use crate::mcp::reply;

/// A line buffer larger than this is dropped after its line, so one large
/// message does not keep its size allocated.
const KEEP_LINE_BUFFER: usize = 64 * 1024;

/// A UTF-8 byte order mark, which rmcp (RFC 8259 §8.1) ignores too.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A tool call in the one shape read here; anything else fails to parse
/// (unknown top-level fields included) and goes to rmcp.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolCall {
    #[allow(dead_code)] // checked by its type: exactly "2.0"
    jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    #[allow(dead_code)] // checked by its type: exactly "tools/call"
    method: CallToolRequestMethod,
    #[serde(deserialize_with = "object")]
    params: CallToolRequestParams,
}

/// `T` from a JSON object only. A derived struct also accepts an array of
/// its fields in order, which rmcp's parser refuses ("Invalid Request").
fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Object<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(Object(std::marker::PhantomData))
}

/// The message rmcp would build from `line`, when it is a tool call. Like
/// rmcp, `_meta` (a progress token, trace context) moves from the params
/// into the request's extensions, where handlers look for it.
fn tool_call(line: &[u8]) -> Option<RxJsonRpcMessage<RoleServer>> {
    let line = line.strip_prefix(UTF8_BOM).unwrap_or(line);
    let mut de = serde_json::Deserializer::from_slice(line);
    let mut call: ToolCall = object(&mut de).ok()?;
    de.end().ok()?;
    let meta = call.params.meta.take();
    let mut request = Request::new(call.params);
    if let Some(meta) = meta {
        request.extensions.insert(meta);
    }
    Some(JsonRpcMessage::Request(JsonRpcRequest::new(
        call.id,
        ClientRequest::CallToolRequest(request),
    )))
}

/// Write `bytes` into the hand-over pipe without waiting; false if it had
/// no room (it always has, see `ToolCallTransport::new`). Unconstrained:
/// tokio's cooperative budget would otherwise refuse a write, room or not,
/// once this task has used its share of the scheduler turn.
fn write_now(pipe: &mut DuplexStream, bytes: &[u8]) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let write = tokio::task::unconstrained(pipe.write_all(bytes));
    matches!(std::pin::pin!(write).poll(&mut cx), Poll::Ready(Ok(())))
}

/// The line of a tool result with the structured-content mark removed:
/// the response rmcp would write for it, then its text spliced in as
/// `structuredContent`.
fn result_line(id: &RequestId, r: &CallToolResult) -> std::io::Result<Vec<u8>> {
    let text = reply::only_text(r)
        .ok_or_else(|| std::io::Error::other("a marked result holds one text item"))?;
    let mut out = Vec::with_capacity(2 * text.len() + 128);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    serde_json::to_writer(&mut out, id)?;
    out.extend_from_slice(br#","result":"#);
    serde_json::to_writer(&mut out, r)?;
    // The result is an object with at least `content`: open it again.
    if out.pop() != Some(b'}') {
        return Err(std::io::Error::other("a tool result is a JSON object"));
    }
    out.extend_from_slice(br#","structuredContent":"#);
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"}}\n");
    Ok(out)
}

/// Append `bytes` to `tail`, keeping only its last `ENDS_KEPT` bytes.
fn keep_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[bytes.len().saturating_sub(ENDS_KEPT)..];
    tail.extend_from_slice(bytes);
    let excess = tail.len().saturating_sub(ENDS_KEPT);
    tail.drain(..excess);
}

/// Write a line the transport answers itself (an error for input that is
/// not a message) on its own task: `receive` must not await a write it
/// could be cancelled in the middle of. One `write_all` of one line is
/// one write into the coalescing writer, so lines never interleave.
fn answer<W: AsyncWrite + Send + Unpin + 'static>(mut write: W, line: Vec<u8>) {
    tokio::spawn(async move {
        let _ = write.write_all(&line).await;
        let _ = write.flush().await;
    });
}

/// Outcome of reading one line.
enum LineRead {
    Line,
    /// A line longer than the limit was read past (not buffered) to its
    /// end; its first and last bytes are in `head` and `tail`.
    Oversized,
    Eof,
    Io(std::io::Error),
}

/// Bytes kept of each end of an oversized line, to find its id.
const ENDS_KEPT: usize = 256;

/// Requests of one connection being handled at once, at most: past it the
/// transport stops reading, so one client cannot queue unbounded work
/// (backpressure reaches it through the pipe).
pub const MAX_IN_FLIGHT: usize = 256;

/// Counts a request as answered when dropped: after its answer's write,
/// or when that write is abandoned.
struct Answered(std::sync::Arc<InFlight>, Option<RequestId>);

impl Drop for Answered {
    fn drop(&mut self) {
        if let Some(id) = &self.1 {
            self.0.done(id);
        }
    }
}

/// The ids of requests read and not yet answered.
#[derive(Default)]
struct InFlight {
    ids: std::sync::Mutex<std::collections::HashSet<RequestId>>,
    room: tokio::sync::Notify,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<RequestId>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn done(&self, id: &RequestId) {
        if self.lock().remove(id) {
            self.room.notify_waiters();
        }
    }

    /// Wait until fewer than `max` requests are in flight. Cancel-safe.
    async fn room(&self, max: usize) {
        loop {
            let notified = self.room.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.lock().len() < max {
                return;
            }
            notified.await;
        }
    }

    /// Count `m` if it is a request, forget a request the client cancelled.
    fn track(&self, m: &RxJsonRpcMessage<RoleServer>) {
        match m {
            JsonRpcMessage::Request(r) => {
                self.lock().insert(r.id.clone());
            }
            JsonRpcMessage::Notification(n) => {
                if let ClientNotification::CancelledNotification(c) = &n.notification {
                    if let Some(id) = &c.params.request_id {
                        self.done(id);
                    }
                }
            }
            _ => {}
        }
    }
}

pub struct ToolCallTransport<R, W>
where
    R: AsyncRead,
    W: AsyncWrite,
{
    read: BufReader<R>,
    /// The line being read; kept across cancelled reads.
    line: Vec<u8>,
    max_line: usize,
    /// Dropping the rest of a line that was too long.
    discarding: bool,
    /// The first and last bytes of the line being dropped, and its size.
    head: Vec<u8>,
    tail: Vec<u8>,
    dropped: usize,
    in_flight: std::sync::Arc<InFlight>,
    /// rmcp's transport, reading the lines handed to it from `pipe`.
    rmcp: AsyncRwTransport<RoleServer, DuplexStream, W>,
    pipe: DuplexStream,
    /// Lines handed to rmcp whose marker has not come back yet.
    handed_over: usize,
    /// The writer rmcp writes to, for the tool results written here.
    direct: W,
    marker_id: RequestId,
    marker_line: Vec<u8>,
}

impl<R, W> ToolCallTransport<R, W>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Clone + Send + Unpin + 'static,
{
    /// `max_line`: the longest message accepted, in bytes; longer lines are
    /// dropped (and logged) without being buffered whole, as rmcp does.
    pub fn new(read: R, write: W, max_line: usize) -> Self {
        let marker = format!("handoff-transport-{}", uuid::Uuid::new_v4());
        let marker_line = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{{\"requestId\":\"{marker}\"}}}}\n"
        )
        .into_bytes();
        // Room for the longest line and its marker: the pipe is empty
        // whenever a line is written to it (see `receive`), so a write
        // never has to wait.
        let (pipe, rmcp_end) =
            tokio::io::duplex(max_line.saturating_add(marker_line.len()).saturating_add(2));
        Self {
            read: BufReader::new(read),
            line: Vec::new(),
            max_line,
            discarding: false,
            head: Vec::new(),
            tail: Vec::new(),
            dropped: 0,
            in_flight: Default::default(),
            // Only lines that passed `max_line` here reach it, and the
            // marker always must.
            direct: write.clone(),
            rmcp: AsyncRwTransport::new_server(rmcp_end, write)
                .with_max_line_length(max_line.max(marker_line.len() + 1)),
            pipe,
            handed_over: 0,
            marker_id: RequestId::String(marker.into()),
            marker_line,
        }
    }

    fn is_marker(&self, m: &RxJsonRpcMessage<RoleServer>) -> bool {
        matches!(m, JsonRpcMessage::Notification(n)
            if matches!(&n.notification, ClientNotification::CancelledNotification(c)
                if c.params.request_id.as_ref() == Some(&self.marker_id)))
    }

    /// Done with the line in `line`: keep its buffer for the next one,
    /// unless a large message grew it.
    fn release_line(&mut self) {
        if self.line.capacity() > KEEP_LINE_BUFFER {
            self.line = Vec::new();
        } else {
            self.line.clear();
        }
    }

    /// Read one `\n`-terminated line into `self.line`, never holding more
    /// than `max_line` bytes of it, newline included (rmcp's bounded
    /// reader and its limit, kept here).
    async fn read_line(&mut self) -> LineRead {
        loop {
            let available = match self.read.fill_buf().await {
                Ok(available) => available,
                Err(e) => return LineRead::Io(e),
            };
            if available.is_empty() {
                return LineRead::Eof;
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let take = newline.map_or(available.len(), |i| i + 1);
            let outcome = if self.discarding {
                keep_tail(&mut self.tail, &available[..take]);
                self.dropped = self.dropped.saturating_add(take);
                newline.map(|_| {
                    self.discarding = false;
                    LineRead::Oversized
                })
            } else if self.line.len().saturating_add(take) > self.max_line {
                self.head.clear();
                self.tail.clear();
                let line = &self.line[..self.line.len().min(ENDS_KEPT)];
                self.head.extend_from_slice(line);
                let more = ENDS_KEPT - self.head.len();
                self.head.extend_from_slice(&available[..take.min(more)]);
                keep_tail(&mut self.tail, &self.line);
                keep_tail(&mut self.tail, &available[..take]);
                self.dropped = self.line.len() + take;
                self.release_line();
                self.discarding = newline.is_none();
                newline.map(|_| LineRead::Oversized)
            } else {
                self.line.extend_from_slice(&available[..take]);
                newline.map(|_| LineRead::Line)
            };
            self.read.consume(take);
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }
}

impl<R, W> Transport<RoleServer> for ToolCallTransport<R, W>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Clone + Send + Unpin + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        // A request stops counting when its answer is written, not when it
        // is made: answers the client does not read must hold the reading
        // back too, or they pile up here instead.
        let answered = Answered(
            self.in_flight.clone(),
            match &item {
                JsonRpcMessage::Response(r) => Some(r.id.clone()),
                JsonRpcMessage::Error(e) => e.id.clone(),
                _ => None,
            },
        );
        let (id, mut result) = match item {
            JsonRpcMessage::Response(JsonRpcResponse {
                id,
                result: ServerResult::CallToolResult(r),
                ..
            }) if reply::structured_text(&r).is_some() => (id, r),
            item => {
                let write = self.rmcp.send(item);
                return Either::Right(async move {
                    let r = write.await;
                    drop(answered);
                    r
                });
            }
        };
        reply::clear_structured_mark(&mut result);
        let mut write = self.direct.clone();
        Either::Left(async move {
            let _answered = answered;
            let line = result_line(&id, &result).or_else(|e| {
                // Not expected (the text is a serialised struct), but the
                // client waits for an answer to this id all the same.
                tracing::error!(error = %e, "encoding a tool result");
                let error = ErrorData::internal_error("encoding the tool result failed", None);
                let mut line =
                    serde_json::to_vec(&TxJsonRpcMessage::<RoleServer>::error(error, Some(id)))?;
                line.push(b'\n');
                Ok::<_, std::io::Error>(line)
            })?;
            write.write_all(&line).await?;
            write.flush().await
        })
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            // What was handed to rmcp was read before anything still unread.
            while self.handed_over > 0 {
                let m = self.rmcp.receive().await?;
                if self.is_marker(&m) {
                    self.handed_over -= 1;
                } else {
                    self.in_flight.track(&m);
                    return Some(m);
                }
            }
            self.in_flight.room(MAX_IN_FLIGHT).await;
            match self.read_line().await {
                LineRead::Line => {}
                LineRead::Oversized => {
                    tracing::warn!(
                        max_bytes = self.max_line,
                        size_bytes = self.dropped,
                        "incoming message exceeded the maximum size, discarded unread"
                    );
                    let line = jsonrpc_guard::oversized_reply(
                        &self.head,
                        &self.tail,
                        self.dropped,
                        self.max_line,
                    );
                    answer(self.direct.clone(), line);
                    continue;
                }
                LineRead::Eof => return None,
                LineRead::Io(e) => {
                    tracing::error!(error = %e, "error reading the client's stream");
                    return None;
                }
            }
            let mut body = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            body = body.strip_suffix(b"\r").unwrap_or(body);
            let verdict = match jsonrpc_guard::check(body) {
                Verdict::Pass => match tool_call(body) {
                    Some(m) => {
                        self.release_line();
                        self.in_flight.track(&m);
                        return Some(m);
                    }
                    None => jsonrpc_guard::shape(body),
                },
                other => other,
            };
            match verdict {
                Verdict::Pass => {}
                Verdict::Reply(line) => {
                    self.release_line();
                    answer(self.direct.clone(), line);
                    continue;
                }
                Verdict::Drop => {
                    self.release_line();
                    continue;
                }
            }
            let written = write_now(&mut self.pipe, &self.line)
                && write_now(&mut self.pipe, &self.marker_line);
            self.release_line();
            if !written {
                tracing::error!("internal: the hand-over pipe to rmcp was full");
                return None;
            }
            self.handed_over += 1;
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.rmcp.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::RequestMetaObject;

    /// The fast path builds exactly what rmcp's own parser builds.
    #[test]
    fn a_tool_call_parses_as_rmcp_parses_it() {
        let lines = [
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"update_context","arguments":{"sessionKey":"k","content":"a \"quoted\" \u00e9 line"}}}"#,
            r#"{"method":"tools/call","params":{"arguments":null,"name":"x"},"id":"abc","jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":-1,"method":"tools/call","params":{"name":"x","unknownParam":1}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"_meta":{"progressToken":0,"x":[1]},"arguments":{"a":1},"name":"register_session"}}"#,
        ];
        for line in lines {
            let ours = tool_call(line.as_bytes()).expect("fast path");
            let theirs: RxJsonRpcMessage<RoleServer> =
                serde_json::from_str(line).expect("rmcp parses it");
            assert_eq!(
                serde_json::to_value(&ours).unwrap(),
                serde_json::to_value(&theirs).unwrap(),
                "{line}"
            );
            // Serialising merges `_meta` back from either place, so where
            // it went is checked on the values themselves.
            let (ours, theirs) = (call_of(ours), call_of(theirs));
            assert_eq!(ours.params, theirs.params, "{line}");
            assert_eq!(
                ours.extensions.get::<RequestMetaObject>(),
                theirs.extensions.get::<RequestMetaObject>(),
                "{line}"
            );
        }
    }

    fn call_of(m: RxJsonRpcMessage<RoleServer>) -> rmcp::model::CallToolRequest {
        match m {
            JsonRpcMessage::Request(r) => match r.request {
                ClientRequest::CallToolRequest(c) => c,
                other => panic!("not a tool call: {other:?}"),
            },
            _ => panic!("not a request"),
        }
    }

    /// A tool result written here is, as JSON, what rmcp writes for the same
    /// result carrying its structured content as a value.
    #[test]
    fn a_marked_result_is_written_as_rmcp_writes_the_value() {
        let json = r#"{"success":true,"message":"a \"quoted\" é\n","n":-1.5,"o":{"b":[1,null]}}"#;
        let id = RequestId::Number(7);
        let mut ours = reply::success(json.to_string(), true);
        let theirs = reply::success(json.to_string(), false);
        assert!(reply::structured_text(&ours).is_some());
        assert!(reply::structured_text(&theirs).is_none());
        reply::clear_structured_mark(&mut ours);
        let line = result_line(&id, &ours).expect("a line");
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(line.ends_with(b"}\n"));
        let ours: serde_json::Value = serde_json::from_slice(&line).expect("JSON");
        let theirs: TxJsonRpcMessage<RoleServer> = JsonRpcMessage::Response(JsonRpcResponse {
            jsonrpc: JsonRpcVersion2_0,
            id,
            result: ServerResult::CallToolResult(theirs),
        });
        assert_eq!(ours, serde_json::to_value(&theirs).unwrap());
        assert!(ours["result"].get("_meta").is_none());
        assert_eq!(ours["result"]["structuredContent"]["o"]["b"][0], 1);
    }

    /// Everything else is left to rmcp.
    #[test]
    fn other_lines_are_not_taken() {
        let lines = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"},"extra":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}"#,
            "not json",
            r#"["2.0",1,"tools/call",{"name":"x"}]"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[null,"x",{},null,null]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}} {}"#,
        ];
        for line in lines {
            assert!(tool_call(line.as_bytes()).is_none(), "{line}");
        }
    }
}
