//! A request answered with one JSON object instead of an SSE stream, when
//! the client accepts both (as the Streamable HTTP transport lets a server
//! choose). rmcp answers every request of a session (the handshake
//! revisions) with an SSE stream holding, for our tools, a priming event and
//! the one response; a client then pays for an event-stream parser per
//! call. Here the stream is read up to its first message: a response or
//! an error becomes an `application/json` body; anything else (a
//! notification or request before the response) keeps the stream, with
//! what was read put back in front, so no message is lost.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;

use crate::transport::drain;

/// An SSE head this large without a message is not ours to buffer.
const MAX_PREFIX: usize = 16 * 1024 * 1024;

fn accepts_json(req: &Request) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

/// Axum middleware, right around the MCP service.
pub async fn prefer_json(req: Request, next: Next) -> Response {
    if req.method() != Method::POST || drain::endless(&req) || !accepts_json(&req) {
        return next.run(req).await;
    }
    let response = next.run(req).await;
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if response.status() != StatusCode::OK || !is_sse {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut stream = body.into_data_stream();
    let mut read: Vec<u8> = Vec::new();
    loop {
        // Events end with a blank line; look at each complete one.
        if let Some(data) = first_message(&read) {
            if is_final(&data) {
                parts.headers.remove(header::CONTENT_TYPE);
                parts.headers.remove(header::CACHE_CONTROL);
                parts.headers.remove("x-accel-buffering");
                parts.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return Response::from_parts(parts, Body::from(data));
            }
            break;
        }
        if read.len() > MAX_PREFIX {
            break;
        }
        match stream.next().await {
            Some(Ok(chunk)) => read.extend_from_slice(&chunk),
            // Ended or failed before a message: give back what there was.
            _ => return Response::from_parts(parts, Body::from(read)),
        }
    }
    // Not a lone reply: the stream as it was, what we read first.
    let head = futures::stream::once(async move { Ok::<Bytes, axum::Error>(Bytes::from(read)) });
    Response::from_parts(parts, Body::from_stream(head.chain(stream)))
}

/// The data of the first event that carries any, once that event is
/// complete.
fn first_message(buf: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(buf).ok().or_else(|| {
        // A chunk may end inside a UTF-8 sequence: use what is whole.
        let valid = std::str::from_utf8(buf).err()?.valid_up_to();
        std::str::from_utf8(&buf[..valid]).ok()
    })?;
    let text = text.replace("\r\n", "\n");
    let mut rest = text.as_str();
    while let Some(end) = rest.find("\n\n") {
        let event = &rest[..end];
        rest = &rest[end + 2..];
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let data = data.join("\n");
        if !data.trim().is_empty() {
            return Some(data);
        }
    }
    None
}

/// A JSON-RPC response or error: the end of this request's exchange.
fn is_final(data: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(data).is_ok_and(|v| {
        v.get("id").is_some()
            && v.get("method").is_none()
            && (v.get("result").is_some() || v.get("error").is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_with_data_is_the_message() {
        let primed = "data: \nid: 0\nretry: 3000\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\nid: 1\n\n";
        let m = first_message(primed.as_bytes()).unwrap();
        assert!(is_final(&m), "{m}");
        // Not complete yet: no message.
        assert_eq!(first_message(b"data: {\"jsonrpc\":\"2.0\",\"id\":1,"), None);
        // A notification first is not final.
        let note =
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n";
        assert!(!is_final(&first_message(note.as_bytes()).unwrap()));
        // A server request (it has an id and a method) is not final either.
        assert!(!is_final(
            r#"{"jsonrpc":"2.0","id":5,"method":"sampling/createMessage"}"#
        ));
        assert!(is_final(
            r#"{"jsonrpc":"2.0","id":5,"error":{"code":-1,"message":"x"}}"#
        ));
    }
}
