//! Who a request comes from, for the per-address limit: the socket's peer, or the right-most
//! `X-Forwarded-For` hop that is not one of the configured proxies.

/// The proxies whose `X-Forwarded-For` is believed (`HARBOR_TRUSTED_PROXIES`, comma-separated
/// CIDRs or addresses; none by default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8, 192.0.2.7`; an empty text is no proxy.
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{s:?} is neither a CIDR nor an IP address"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// Whether `ip` is one of them.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// What the per-address limit keys on, in words for the start-up log.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            "the socket's peer address (no trusted proxies: behind a load balancer every client shares its address)".to_owned()
        } else {
            let nets: Vec<String> = self.0.iter().map(ToString::to_string).collect();
            format!(
                "the right-most X-Forwarded-For address that is not a trusted proxy ({})",
                nets.join(", ")
            )
        }
    }

    /// The client of a request that came from `peer` with these `X-Forwarded-For` values: `peer`
    /// itself unless it is a trusted proxy; then the right-most forwarded address that is not
    /// one (a client can prepend anything, so only the hops our proxies appended count). A
    /// malformed header from a trusted proxy counts as no header: the peer is the client.
    pub fn client_of<'a>(
        &self,
        peer: std::net::IpAddr,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> std::net::IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        // From the right: each hop was appended by the one before it. Trusted hops are skipped;
        // the first address that is not a trusted proxy is the client. What a client put further
        // left (garbage, `unknown`, an address of its choice) is never reached; a hop that is not
        // an address stops the walk at the last trusted hop.
        let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.trim().parse::<std::net::IpAddr>() else {
                break;
            };
            client = ip.to_canonical();
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// The client's address, as [`TrustedProxies::client_of`] finds it; the request-context
/// middleware puts it into the request's extensions.
#[derive(Clone, Debug)]
pub struct ClientAddress(pub String);

impl ClientAddress {
    /// The address of a request from `peer` carrying `headers`.
    pub fn of(
        trusted: &TrustedProxies,
        peer: Option<std::net::SocketAddr>,
        headers: &axum::http::HeaderMap,
    ) -> Self {
        let Some(peer) = peer else {
            return ClientAddress("unknown".to_owned());
        };
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        ClientAddress(trusted.client_of(peer.ip(), forwarded).to_string())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddress>()
            .cloned()
            .unwrap_or_else(|| ClientAddress("unknown".to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trusted_proxies_are_believed_right_to_left() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_of(ip("10.0.0.5"), ["203.0.113.9"].into_iter()),
            ip("10.0.0.5"),
            "with no trusted proxy the header is ignored"
        );
        let lb = TrustedProxies::parse("10.0.0.0/8, 192.0.2.7").unwrap();
        assert_eq!(
            lb.client_of(ip("10.0.0.5"), ["198.51.100.1, 203.0.113.9"].into_iter()),
            ip("203.0.113.9"),
            "the right-most untrusted hop, not what the client prepended"
        );
        assert_eq!(
            lb.client_of(
                ip("10.0.0.5"),
                ["203.0.113.9, 10.1.1.1", "192.0.2.7"].into_iter()
            ),
            ip("203.0.113.9"),
            "trusted hops are skipped, across repeated headers"
        );
        assert_eq!(
            lb.client_of(ip("198.51.100.1"), ["203.0.113.9"].into_iter()),
            ip("198.51.100.1"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(
            lb.client_of(ip("10.0.0.5"), ["not-an-address"].into_iter()),
            ip("10.0.0.5")
        );
        assert_eq!(
            lb.client_of(ip("10.0.0.5"), ["unknown, 203.0.113.9"].into_iter()),
            ip("203.0.113.9"),
            "what the client prepended is never read"
        );
        assert_eq!(
            lb.client_of(ip("::ffff:10.0.0.5"), ["203.0.113.9"].into_iter()),
            ip("203.0.113.9"),
            "an IPv4-mapped peer matches an IPv4 CIDR"
        );
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
    }
}
