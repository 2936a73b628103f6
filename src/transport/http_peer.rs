//! Who is calling, by address, and whether that address may call at all.
//!
//! The client's address is the TCP peer, unless the peer is one of
//! `http.trusted_proxies`: then it is the right-most address of
//! `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends
//! the address it saw, so everything left of that was written by the
//! client and proves nothing). `X-Forwarded-For` from any other peer is
//! ignored. That address feeds the allowlist (`http.allow_ips`, checked
//! before the key), the per-address rate limit and the audit of refusals.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

/// Who a per-caller limit counts: the API key, or the client address when
/// keys are off.
pub fn caller(req: &Request) -> String {
    match (
        req.extensions().get::<crate::auth::Principal>(),
        req.extensions().get::<ClientAddr>(),
    ) {
        (Some(p), _) => p.label(),
        (None, Some(ClientAddr(ip))) => format!("ip:{ip}"),
        (None, None) => "ip:unknown".to_string(),
    }
}

/// The effective client address, in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

pub struct Peers {
    allow: Vec<IpNet>,
    proxies: Vec<IpNet>,
}

/// `10.0.0.0/8`, or one address (`10.1.2.3`, `::1`).
fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
}

impl Peers {
    pub fn new(allow: &[String], proxies: &[String]) -> Result<Arc<Self>, String> {
        let nets = |list: &[String], what: &str| {
            list.iter()
                .map(|s| parse_net(s).map_err(|e| format!("http.{what}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Arc::new(Self {
            allow: nets(allow, "allow_ips")?,
            proxies: nets(proxies, "trusted_proxies")?,
        }))
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|n| n.contains(&canonical(ip)))
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&canonical(ip)))
    }

    /// The client behind `peer`, given the `X-Forwarded-For` values.
    fn client<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        if !self.trusted(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).collect();
        let mut last_trusted = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Garbage in the chain: the last address we can vouch for.
                return last_trusted;
            };
            if !self.trusted(ip) {
                return ip;
            }
            last_trusted = ip;
        }
        // Trusted proxies all the way: the one nearest the client.
        last_trusted
    }
}

/// One `X-Forwarded-For` entry: `10.1.2.3`, `2001:db8::1`, and the forms
/// with a port some proxies write (`10.1.2.3:5678`, `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(canonical)
}

/// `::ffff:10.1.2.3` is `10.1.2.3` (a dual-stack listener sees the former).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Axum middleware: resolve the client address; refuse it with 403 when an
/// allowlist is set and does not contain it.
pub async fn check(
    State(peers): State<Arc<Peers>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let client = peers.client(canonical(peer.ip()), forwarded);
    if !peers.allowed(client) {
        // The request log line (status 403, this address) says it; no
        // second line per refusal, which a scan would multiply.
        let mut refused = (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"forbidden"}"#,
        )
            .into_response();
        refused.extensions_mut().insert(ClientAddr(client));
        return refused;
    }
    req.extensions_mut().insert(ClientAddr(client));
    let mut response = next.run(req).await;
    // For the request log, outside this layer.
    response.extensions_mut().insert(ClientAddr(client));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(allow: &[&str], proxies: &[&str]) -> Arc<Peers> {
        let s = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Peers::new(&s(allow), &s(proxies)).unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p = peers(&[], &["10.0.0.0/8"]);
        // An untrusted peer's header is ignored.
        assert_eq!(
            p.client(ip("192.0.2.1"), ["203.0.113.9"].into_iter()),
            ip("192.0.2.1")
        );
        // Through two trusted proxies: the first untrusted from the right;
        // what the client wrote further left is not believed.
        assert_eq!(
            p.client(
                ip("10.0.0.1"),
                ["6.6.6.6, 203.0.113.9, 10.0.0.2"].into_iter()
            ),
            ip("203.0.113.9")
        );
        // Several headers are one list; garbage stops at the last trusted.
        assert_eq!(
            p.client(ip("10.0.0.1"), ["203.0.113.9", "10.0.0.3"].into_iter()),
            ip("203.0.113.9")
        );
        assert_eq!(
            p.client(ip("10.0.0.1"), ["nonsense"].into_iter()),
            ip("10.0.0.1")
        );
        assert_eq!(
            p.client(ip("10.0.0.1"), ["6.6.6.6, nonsense, 10.0.0.2"].into_iter()),
            ip("10.0.0.2")
        );
        // Entries with a port, as some proxies write them.
        assert_eq!(
            p.client(ip("10.0.0.1"), ["203.0.113.9:5678"].into_iter()),
            ip("203.0.113.9")
        );
        assert_eq!(
            p.client(
                ip("10.0.0.1"),
                ["[2001:db8::1]:443, 10.0.0.2:80"].into_iter()
            ),
            ip("2001:db8::1")
        );
        assert_eq!(
            p.client(ip("10.0.0.1"), ["::ffff:203.0.113.9"].into_iter()),
            ip("203.0.113.9")
        );
        assert_eq!(p.client(ip("10.0.0.1"), std::iter::empty()), ip("10.0.0.1"));
    }

    #[test]
    fn allowlist_takes_blocks_and_single_addresses() {
        let p = peers(&["10.0.0.0/8", "192.0.2.7", "::1"], &[]);
        for ok in ["10.9.8.7", "192.0.2.7", "::1", "::ffff:10.1.1.1"] {
            assert!(p.allowed(ok.parse().unwrap()), "{ok}");
        }
        for no in ["192.0.2.8", "127.0.0.1", "2001:db8::1"] {
            assert!(!p.allowed(no.parse().unwrap()), "{no}");
        }
        assert!(peers(&[], &[]).allowed("203.0.113.1".parse().unwrap()));
        assert!(Peers::new(&["10.0.0.0/33".into()], &[]).is_err());
        assert!(Peers::new(&[], &["example.com".into()]).is_err());
    }
}
