//! Routes: which calls go where, and which side of a call is the customer.
//!
//! A route matches on the source address (directly or through a named zone of networks) and on
//! the user part of the Request-URI (prefix or regular expression). Its target is a SIP URI
//! whose host is an IP literal: tapir never resolves or follows a host named in a request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use sip::{Host, Transport, Uri};

use crate::secure::RouteSrtp;
use crate::B2buaError;

/// Which party of a call a route calls the customer; the other is the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The party that sent the INVITE to tapir (leg A).
    Caller,
    /// The party tapir calls (leg B).
    Callee,
}

/// An IPv4 or IPv6 network, `addr/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, B2buaError> {
        let bad =
            || B2buaError::Config(format!("'{s}' is not an address or network (a.b.c.d/len)"));
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if len > max {
            return Err(bad());
        }
        Ok(Self { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer reached over an IPv6 socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - self.len as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX.checked_shl(128 - self.len as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// Route as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// Networks the INVITE may come from (`a.b.c.d/len` or an address).
    #[serde(default)]
    pub source: Vec<String>,
    /// Named zone (see `[zones]`) the INVITE must come from.
    #[serde(default)]
    pub source_zone: Option<String>,
    /// Request-URI user must start with this.
    #[serde(default)]
    pub user_prefix: Option<String>,
    /// Request-URI user must match this regular expression (anchored by the writer).
    #[serde(default)]
    pub user_pattern: Option<String>,
    /// Where the call goes: a SIP URI with an IP literal host, e.g. `sip:10.0.0.5:5060`,
    /// `sip:[2001:db8::5];transport=tcp`. When it has no user part, the caller's
    /// Request-URI user is kept.
    pub target: String,
    /// Which side is the customer (recorded on channel 1).
    pub customer: Side,
    /// Label for the recording metadata and policy (e.g. `inbound`, `outbound`).
    #[serde(default)]
    pub direction: Option<String>,
    /// Recording mode for calls on this route (`never`, `always`, `on_demand`); interpreted
    /// by the recorder, which falls back to its own default when absent.
    #[serde(default)]
    pub record: Option<String>,
    /// Recording file format for this route (`wav`, `mp3`); recorder default when absent.
    #[serde(default)]
    pub format: Option<String>,
    /// The route's numbers are outside the contact centre (a carrier trunk, an emergency
    /// service): a transfer whose target this route would carry is an external transfer.
    #[serde(default)]
    pub external: bool,
    /// SRTP on each leg and what to do with streams tapir cannot decrypt.
    #[serde(default)]
    pub srtp: RouteSrtp,
    /// How the target is verified when `target` says `;transport=tls`.
    #[serde(default)]
    pub tls: Option<RouteTls>,
}

/// TLS verification of a route's target (read by the binary, which makes the connections).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTls {
    /// PEM file of the CAs the target's certificate must chain to.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM file of the target's own certificate: only that one is accepted (pinning).
    pub pinned_cert: Option<std::path::PathBuf>,
    /// Name the certificate must carry; the target's IP address when absent.
    pub server_name: Option<String>,
    /// PEM certificate chain tapir presents when the target asks for one (mutual TLS).
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    source: Vec<Cidr>,
    user_prefix: Option<String>,
    user_pattern: Option<regex_lite::Regex>,
    pub target_uri: Uri,
    pub target: SocketAddr,
    pub transport: Transport,
    pub customer: Side,
    pub direction: Option<String>,
    pub record: Option<String>,
    pub format: Option<String>,
    pub external: bool,
    /// The registered account a call on this route goes to (calls to phones registered
    /// through tapir): the station, whatever Contact the PBX dialled.
    pub station: Option<String>,
    pub srtp: RouteSrtp,
}

/// The compiled routing table; first match wins.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    pub fn compile(
        routes: &[RouteConfig],
        zones: &HashMap<String, Vec<String>>,
    ) -> Result<Self, B2buaError> {
        let mut out = Vec::with_capacity(routes.len());
        for r in routes {
            let ctx = |m: String| B2buaError::Config(format!("route '{}': {m}", r.name));
            let mut source = Vec::new();
            for s in &r.source {
                source.push(Cidr::parse(s).map_err(|e| ctx(e.to_string()))?);
            }
            if let Some(z) = &r.source_zone {
                let nets = zones
                    .get(z)
                    .ok_or_else(|| ctx(format!("unknown zone '{z}'")))?;
                for s in nets {
                    source.push(Cidr::parse(s).map_err(|e| ctx(e.to_string()))?);
                }
            }
            let user_pattern = match &r.user_pattern {
                Some(p) => Some(
                    regex_lite::Regex::new(p).map_err(|e| ctx(format!("bad user_pattern: {e}")))?,
                ),
                None => None,
            };
            let target_uri = Uri::parse(&r.target)
                .map_err(|e| ctx(format!("bad target '{}': {e}", r.target)))?;
            let sip = target_uri
                .sip()
                .ok_or_else(|| ctx("target must be a sip: URI".into()))?;
            let ip = match &sip.host {
                Host::Name(n) | Host::V6(n) => n
                    .parse::<IpAddr>()
                    .map_err(|_| ctx("target host must be an IP address".into()))?,
            };
            let transport = match sip.params.value("transport") {
                Some(t) => Transport::parse(t)
                    .filter(|t| matches!(t, Transport::Udp | Transport::Tcp | Transport::Tls))
                    .ok_or_else(|| ctx(format!("unsupported transport '{t}'")))?,
                None => Transport::Udp,
            };
            out.push(Route {
                name: r.name.clone(),
                source,
                user_prefix: r.user_prefix.clone(),
                user_pattern,
                target: SocketAddr::new(ip, sip.port.unwrap_or(5060)),
                target_uri,
                transport,
                customer: r.customer,
                direction: r.direction.clone(),
                record: r.record.clone(),
                format: r.format.clone(),
                external: r.external,
                station: None,
                srtp: r.srtp,
            });
        }
        Ok(Self { routes: out })
    }

    /// The route named `name`.
    pub fn get(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    pub fn find(&self, source: IpAddr, user: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            (r.source.is_empty() || r.source.iter().any(|c| c.contains(source)))
                && r.user_prefix.as_deref().is_none_or(|p| user.starts_with(p))
                && r.user_pattern.as_ref().is_none_or(|p| p.is_match(user))
        })
    }

    /// Whether a call to `user` would leave the contact centre: the first route (whatever its
    /// source networks) whose user filters match it is marked `external`.
    pub fn is_external(&self, user: &str) -> bool {
        self.routes
            .iter()
            .find(|r| {
                r.user_prefix.as_deref().is_none_or(|p| user.starts_with(p))
                    && r.user_pattern.as_ref().is_none_or(|p| p.is_match(user))
            })
            .is_some_and(|r| r.external)
    }

    /// Whether some route sends calls to `addr`: the only addresses a request may steer
    /// tapir to (a transfer's Refer-To, for instance).
    pub fn has_target(&self, addr: SocketAddr) -> bool {
        self.routes.iter().any(|r| r.target == addr)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, src: &[&str], prefix: Option<&str>, pat: Option<&str>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            source: src.iter().map(|s| s.to_string()).collect(),
            source_zone: None,
            user_prefix: prefix.map(Into::into),
            user_pattern: pat.map(Into::into),
            target: "sip:127.0.0.1:5070".into(),
            customer: Side::Caller,
            direction: None,
            record: None,
            format: None,
            external: false,
            srtp: Default::default(),
            tls: None,
        }
    }

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains("2001:db8:1::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn first_match_wins() {
        let zones = HashMap::from([("pbx".to_string(), vec!["192.0.2.0/24".to_string()])]);
        let mut z = route("from-pbx", &[], None, None);
        z.source_zone = Some("pbx".into());
        let routes = Routes::compile(
            &[
                route("emergency", &[], Some("11"), None),
                z,
                route("digits", &["127.0.0.0/8"], None, Some("^[0-9]{4}$")),
            ],
            &zones,
        )
        .unwrap();
        let lo = "127.0.0.1".parse().unwrap();
        assert_eq!(routes.find(lo, "112").unwrap().name, "emergency");
        assert_eq!(routes.find(lo, "1234").unwrap().name, "digits");
        assert!(routes.find(lo, "12345").is_none());
        let pbx = "192.0.2.7".parse().unwrap();
        assert_eq!(routes.find(pbx, "alice").unwrap().name, "from-pbx");
    }

    #[test]
    fn bad_routes_are_named() {
        let mut r = route("x", &[], None, None);
        r.target = "sip:carrier.example.com".into();
        let e = Routes::compile(&[r], &HashMap::new()).unwrap_err();
        assert!(e.to_string().contains("route 'x'"), "{e}");
        let mut r = route("y", &[], None, None);
        r.source_zone = Some("nope".into());
        assert!(Routes::compile(&[r], &HashMap::new())
            .unwrap_err()
            .to_string()
            .contains("unknown zone 'nope'"));
    }
}
