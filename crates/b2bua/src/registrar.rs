//! Registration relay for the phone-side deployment, where tapir is the outbound proxy of desk
//! phones and the PBX is their registrar.
//!
//! A phone's REGISTER is relayed to the configured registrar with tapir's own Contact, so the
//! PBX sends calls for that user to tapir. Challenges (401/407) go back to the phone untouched
//! and the retried REGISTER carries the phone's credentials as they are: tapir holds no
//! passwords. The phone's Request-URI is kept because digest responses cover it.
//!
//! Each phone registration, identified like a registrar does by address-of-record and Contact
//! URI (RFC 3261 §10.3), gets a stable relay identity on the registrar side: one Call-ID, one
//! From tag, an increasing CSeq, and a contact user `<aor-user>~<token>` that is unique per
//! registration. A phone that changes its Call-ID on every refresh (some do) still appears to
//! the registrar as one registration, and two phones of the same user never share a contact.
//!
//! On a 2xx, the [`Bindings`] table keeps the phone's Contact, the expiry the registrar
//! granted, and the transport address the REGISTER came from, which is where calls go (a phone
//! behind NAT is reachable only there). The phone is answered with its own Contact and the
//! granted expiry.
//!
//! Calls toward phones: an INVITE from the registrar's address (or one of `sources`) whose
//! Request-URI user is a live binding's contact user, or failing that the user part of a live
//! binding's address-of-record, goes to that binding's phone. If no binding matches, the
//! routes are tried as for any INVITE, and if none matches the call is refused with 480
//! Temporarily Unavailable: the registrar believes the user exists, tapir only knows the phone
//! is not registered right now (RFC 3261 §21.4.18), whereas 404 would claim the user does not
//! exist.
//!
//! Limits: one binding per (address-of-record, Contact); when a REGISTER lists several
//! Contacts only the first is relayed. GRUU and outbound (RFC 5626) parameters are not kept;
//! Path and Service-Route from the registrar are dropped so the phone keeps sending through
//! tapir.
//!
//! Everything here is sans-IO: time comes in as `now`, expiries are reported through
//! [`Bindings::next_deadline`] and applied by [`Bindings::expire`].

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sip::transaction::{Peer, TxKey};
use sip::{HeaderAccess, Method, NameAddr, Request, Response, Transport, Uri};

use crate::routing::{Cidr, Route, RouteConfig, Routes, Side};
use crate::{B2bua, B2buaError, IdGen};

/// Expiry asked for when a REGISTER names none (RFC 3261 §10.2.1.1 leaves it to the
/// registrar; one hour is the common default).
const DEFAULT_EXPIRES: u32 = 3600;

/// How long the relay identity of a registration that never succeeded is kept, so that the
/// REGISTER retried after a challenge reuses the challenged Call-ID.
const PENDING_IDLE: Duration = Duration::from_secs(300);

/// Headers of a phone's REGISTER that are rebuilt for the registrar or must not reach it.
const REGISTER_LOCAL_HEADERS: &[&str] = &[
    "Via",
    "Route",
    "Record-Route",
    "Path",
    "Contact",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Content-Length",
    "From",
    "To",
    "Expires",
];

/// Headers of the registrar's response that stay on the registrar side: the rest (challenges,
/// Min-Expires, Date, Expires, Allow, Supported...) reach the phone.
const RESPONSE_LOCAL_HEADERS: &[&str] = &[
    "Via",
    "Contact",
    "Call-ID",
    "CSeq",
    "Content-Length",
    "From",
    "To",
    "Path",
    "Service-Route",
    "Record-Route",
    "Content-Type",
    "Server",
];

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, NOTIFY";

fn default_min_expires() -> u32 {
    60
}

fn default_max_expires() -> u32 {
    3600
}

fn default_customer() -> Side {
    Side::Caller
}

/// The `[registrar]` section as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarConfig {
    /// The PBX registrar: a SIP URI whose host is an IP literal, e.g. `sip:10.0.0.5:5060` or
    /// `sip:10.0.0.5;transport=tcp`.
    pub target: String,
    /// Networks calls toward registered phones may come from; the registrar's address when
    /// empty.
    #[serde(default)]
    pub sources: Vec<String>,
    /// A REGISTER asking for less (and more than 0) is answered 423 with this Min-Expires.
    #[serde(default = "default_min_expires")]
    pub min_expires: u32,
    /// Expiry asked of the registrar is capped to this; 0 leaves it uncapped.
    #[serde(default = "default_max_expires")]
    pub max_expires: u32,
    /// Which side of a call toward a registered phone is the customer: `caller` (the PBX leg,
    /// which carries the outside party) or `callee` (the phone).
    #[serde(default = "default_customer")]
    pub customer: Side,
    /// Direction label of those calls for the recording metadata and policy.
    #[serde(default)]
    pub direction: Option<String>,
    /// Recording mode of those calls (`never`, `always`, `on_demand`).
    #[serde(default)]
    pub record: Option<String>,
    /// Recording format of those calls (`wav`, `mp3`).
    #[serde(default)]
    pub format: Option<String>,
}

impl RegistrarConfig {
    /// A config relaying to `target` with every other setting at its default.
    pub fn new(target: &str) -> Self {
        Self {
            target: target.to_string(),
            sources: Vec::new(),
            min_expires: default_min_expires(),
            max_expires: default_max_expires(),
            customer: default_customer(),
            direction: None,
            record: None,
            format: None,
        }
    }

    /// Checks the settings and compiles them for [`B2bua::set_registrar`].
    pub fn compile(&self) -> Result<Registrar, B2buaError> {
        let ctx = |m: String| B2buaError::Config(format!("registrar: {m}"));
        // The target follows the rules of a route target (IP literal host, udp or tcp), so it
        // is compiled as one; the result is also the template of calls toward phones.
        let rc = RouteConfig {
            name: "registrar".into(),
            source: Vec::new(),
            source_zone: None,
            user_prefix: None,
            user_pattern: None,
            target: self.target.clone(),
            customer: self.customer,
            direction: self.direction.clone(),
            record: self.record.clone(),
            format: self.format.clone(),
            srtp: Default::default(),
            tls: None,
            external: false,
        };
        let routes = Routes::compile(&[rc], &HashMap::new())
            .map_err(|e| ctx(e.to_string().replace("route 'registrar': ", "")))?;
        let route = routes
            .find(IpAddr::from([0, 0, 0, 0]), "")
            .cloned()
            .ok_or_else(|| ctx("target did not compile".into()))?;
        let mut sources = Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            sources.push(Cidr::parse(s).map_err(|e| ctx(e.to_string()))?);
        }
        if sources.is_empty() {
            sources
                .push(Cidr::parse(&route.target.ip().to_string()).map_err(|e| ctx(e.to_string()))?);
        }
        if self.max_expires != 0 && self.max_expires < self.min_expires {
            return Err(ctx("max_expires is below min_expires".into()));
        }
        Ok(Registrar {
            route,
            sources,
            min_expires: self.min_expires,
            max_expires: self.max_expires,
        })
    }
}

/// Compiled registrar settings.
#[derive(Debug, Clone)]
pub struct Registrar {
    /// Template for calls toward phones: target, transport and URI are replaced per call.
    route: Route,
    sources: Vec<Cidr>,
    min_expires: u32,
    max_expires: u32,
}

impl Registrar {
    /// Where REGISTERs are relayed to.
    pub fn peer(&self) -> Peer {
        Peer {
            addr: self.route.target,
            transport: self.route.transport,
        }
    }

    /// Whether an INVITE from `ip` may be a call toward a registered phone.
    pub fn is_source(&self, ip: IpAddr) -> bool {
        self.sources.iter().any(|c| c.contains(ip))
    }
}

/// One phone registration as the relay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Address-of-record in canonical form, `sip:user@host` (lower-case host, no port or
    /// parameters).
    pub aor: String,
    /// User part of the address-of-record.
    pub user: String,
    /// The phone's Contact URI: the Request-URI of calls sent to it.
    pub contact: Uri,
    /// Where the REGISTER came from: calls go there, whatever the Contact says (NAT).
    pub peer: Peer,
    /// User part of tapir's Contact toward the registrar; identifies this binding in calls
    /// from the PBX.
    pub token: String,
    /// When the registrar's grant runs out; `None` while not registered (challenged, or
    /// waiting for the registrar's answer).
    pub expires_at: Option<Instant>,
}

impl Binding {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t > now)
    }

    /// Whole seconds left, rounded up so a live binding never shows 0.
    fn remaining(&self, now: Instant) -> u64 {
        self.expires_at
            .map(|t| {
                let d = t.saturating_duration_since(now);
                d.as_secs() + u64::from(d.subsec_nanos() > 0)
            })
            .unwrap_or(0)
    }
}

#[derive(Debug)]
struct Entry {
    binding: Binding,
    /// Registrar-side Call-ID, From tag and last CSeq of this registration.
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// When this entry must be looked at again: the binding's expiry, or the end of the idle
    /// time of a registration that never succeeded.
    deadline: Instant,
}

/// The registrar-side identity to use for one relayed REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayIdentity {
    pub id: u64,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    pub token: String,
}

/// The binding table: phone registrations keyed by (address-of-record, Contact), by tapir's
/// contact user, and ordered by deadline for expiry.
#[derive(Debug, Default)]
pub struct Bindings {
    entries: HashMap<u64, Entry>,
    by_key: HashMap<(String, String), u64>,
    by_token: HashMap<String, u64>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_id: u64,
}

impl Bindings {
    /// Finds or creates the registration of `contact` for `aor` and returns the identity for
    /// its next REGISTER toward the registrar (same Call-ID, CSeq one higher).
    pub(crate) fn prepare(
        &mut self,
        now: Instant,
        aor: &str,
        user: &str,
        contact: &Uri,
        peer: Peer,
        ids: &mut IdGen,
    ) -> RelayIdentity {
        let key = (aor.to_string(), contact.to_string());
        let id = match self.by_key.get(&key) {
            Some(&id) => id,
            None => {
                self.next_id += 1;
                self.by_key.insert(key, self.next_id);
                self.next_id
            }
        };
        let e = self.entries.entry(id).or_insert_with(|| {
            // 12 hex digits keep tokens unique in one process and out of reach of guessing.
            let token = format!("{user}~{}", &ids.next()[..12]);
            self.by_token.insert(token.clone(), id);
            Entry {
                binding: Binding {
                    aor: aor.to_string(),
                    user: user.to_string(),
                    contact: contact.clone(),
                    peer,
                    token,
                    expires_at: None,
                },
                call_id: format!("{}@tapir", ids.next()),
                from_tag: ids.next(),
                cseq: 0,
                deadline: now + PENDING_IDLE,
            }
        });
        e.cseq = e.cseq.wrapping_add(1).max(1);
        if e.binding.expires_at.is_none() {
            // Still not registered: the idle time starts again with each attempt.
            self.deadlines.remove(&(e.deadline, id));
            e.deadline = now + PENDING_IDLE;
        }
        self.deadlines.insert((e.deadline, id));
        RelayIdentity {
            id,
            call_id: e.call_id.clone(),
            from_tag: e.from_tag.clone(),
            cseq: e.cseq,
            token: e.binding.token.clone(),
        }
    }

    /// Applies a registrar's grant of `expires` seconds to registration `id`, which the phone
    /// sent from `peer`; 0 removes it. Returns false when `id` is unknown (expired meanwhile).
    pub fn confirm(&mut self, now: Instant, id: u64, expires: u32, peer: Peer) -> bool {
        if expires == 0 {
            return self.remove(id);
        }
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        let at = now + Duration::from_secs(u64::from(expires));
        e.binding.expires_at = Some(at);
        e.binding.peer = peer;
        self.deadlines.remove(&(e.deadline, id));
        e.deadline = at;
        self.deadlines.insert((at, id));
        true
    }

    /// Forgets registration `id`.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(e) = self.entries.remove(&id) else {
            return false;
        };
        self.deadlines.remove(&(e.deadline, id));
        self.by_key
            .remove(&(e.binding.aor.clone(), e.binding.contact.to_string()));
        self.by_token.remove(&e.binding.token);
        true
    }

    /// Forgets every registration of `aor` (`Contact: *`); returns how many there were.
    pub fn remove_aor(&mut self, aor: &str) -> usize {
        let ids: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.binding.aor == aor)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.remove(*id);
        }
        ids.len()
    }

    /// The live binding a call to Request-URI user `user` is for: tapir's contact user of a
    /// binding, else the most recently granted binding of that address-of-record user.
    pub fn lookup(&self, now: Instant, user: &str) -> Option<&Binding> {
        if let Some(e) = self.by_token.get(user).and_then(|id| self.entries.get(id)) {
            if e.binding.live(now) {
                return Some(&e.binding);
            }
        }
        self.entries
            .values()
            .map(|e| &e.binding)
            .filter(|b| b.user == user && b.live(now))
            .max_by_key(|b| b.expires_at)
    }

    /// The binding whose tapir contact user is `token`, live or not.
    pub fn by_token(&self, token: &str) -> Option<&Binding> {
        self.by_token
            .get(token)
            .and_then(|id| self.entries.get(id))
            .map(|e| &e.binding)
    }

    /// Drops registrations whose grant ran out and relay identities idle too long; returns the
    /// number of live bindings dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            if self
                .entries
                .get(&id)
                .is_some_and(|e| e.binding.expires_at.is_some())
            {
                dropped += 1;
            }
            if !self.remove(id) {
                self.deadlines.remove(&(at, id));
            }
        }
        dropped
    }

    /// When [`Bindings::expire`] has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Number of live bindings at `now`.
    pub fn live(&self, now: Instant) -> usize {
        self.entries
            .values()
            .filter(|e| e.binding.live(now))
            .count()
    }

    /// Every binding, registered or not, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.entries.values().map(|e| &e.binding)
    }
}

/// What a relayed REGISTER asked for.
#[derive(Debug)]
enum Kind {
    /// Add or refresh the binding of registration `id`.
    Bind(u64),
    /// Remove the binding of registration `id` (expires 0).
    Unbind(u64),
    /// `Contact: *`: remove every binding of the address-of-record.
    UnbindAll(String),
    /// No Contact: the phone asks which bindings exist.
    Query,
}

/// A REGISTER relayed to the registrar, waiting for its answer.
#[derive(Debug)]
struct Pending {
    server: TxKey,
    request: Request,
    from: Peer,
    kind: Kind,
    /// tapir's Contact user in the relayed request, to find its grant in the 2xx.
    token: Option<String>,
}

/// The registration relay state of one [`B2bua`].
#[derive(Debug, Default)]
pub(crate) struct State {
    settings: Option<Registrar>,
    bindings: Bindings,
    pending: HashMap<TxKey, Pending>,
}

/// `sip:user@host` with a lower-case host and no port or parameters (RFC 3261 §10.3 step 5
/// compares addresses-of-record this way).
fn canonical_aor(uri: &Uri) -> Option<(String, String)> {
    let s = uri.sip()?;
    let user = uri.user()?.to_string();
    let scheme = if s.secure { "sips" } else { "sip" };
    let host = s.host.as_str().to_ascii_lowercase();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some((format!("{scheme}:{user}@{host}"), user))
}

fn parse_expires(v: &str) -> Option<u32> {
    // Values above 2^32-1 are legal and mean "very long" (§20.19); cap instead of failing.
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u64::from(u32::MAX)) as u32),
    )
}

impl B2bua {
    /// Turns the registration relay on (or off with `None`). Bindings are kept across calls,
    /// so a configuration reload does not unregister phones.
    pub fn set_registrar(&mut self, registrar: Option<Registrar>) {
        self.reg.settings = registrar;
    }

    /// Whether `addr` is the registrar's (a known next hop).
    pub(crate) fn is_registrar(&self, addr: SocketAddr) -> bool {
        self.reg
            .settings
            .as_ref()
            .is_some_and(|r| r.peer().addr == addr)
    }

    /// The binding table (for the control API, metrics and tests).
    pub fn bindings(&self) -> &Bindings {
        &self.reg.bindings
    }

    pub(crate) fn registrar_deadline(&self) -> Option<Instant> {
        self.reg.bindings.next_deadline()
    }

    pub(crate) fn expire_registrations(&mut self, now: Instant) {
        let n = self.reg.bindings.expire(now);
        if n > 0 {
            tracing::info!(expired = n, "registrations expired");
        }
    }

    /// Whether an INVITE from `from` comes from the registrar's side.
    pub(crate) fn is_registrar_side(&self, from: Peer) -> bool {
        self.reg
            .settings
            .as_ref()
            .is_some_and(|r| r.is_source(from.addr.ip()))
    }

    /// The route of a call from the registrar's side to a registered phone, if `req` is one.
    pub(crate) fn registered_route(
        &self,
        now: Instant,
        from: Peer,
        req: &Request,
    ) -> Option<Route> {
        let reg = self.reg.settings.as_ref()?;
        if !reg.is_source(from.addr.ip()) {
            return None;
        }
        let b = self.reg.bindings.lookup(now, req.uri.user()?)?;
        let mut route = reg.route.clone();
        route.target_uri = b.contact.clone();
        if let Some(s) = route.target_uri.sip_mut() {
            if s.user.is_none() {
                // Otherwise leg B would carry tapir's contact user to the phone.
                s.user = Some(b.user.clone());
            }
        }
        route.target = b.peer.addr;
        route.transport = b.peer.transport;
        route.station = Some(b.user.clone());
        Some(route)
    }

    /// A REGISTER outside any dialog.
    pub(crate) fn on_register(&mut self, now: Instant, key: TxKey, req: Request, from: Peer) {
        let reject = |this: &mut Self, code: u16, reason: &str| {
            let r = req.response(code, reason);
            this.respond(now, &key, r);
        };
        let Some(reg) = self.reg.settings.clone() else {
            let mut r = req.response(405, "Method Not Allowed");
            r.headers.push("Allow", ALLOW);
            self.respond(now, &key, r);
            return;
        };
        let mf = req.max_forwards().unwrap_or(70);
        if mf == 0 {
            return reject(self, 483, "Too Many Hops");
        }
        let Some(to) = req.to() else {
            return reject(self, 400, "Bad Request: no To");
        };
        if to.uri.sip().is_none() {
            // Not an address-of-record at all (RFC 4475 §3.3.4: a registrar rejects a To in an
            // unknown scheme with 400).
            return reject(self, 400, "Bad Request: To is not a SIP URI");
        }
        let Some((aor, user)) = canonical_aor(&to.uri) else {
            // A SIP AOR without a user names no one this relay can keep a binding for
            // (RFC 3261 §10.3 step 5).
            return reject(self, 404, "Not Found: To has no user");
        };
        let Some(from_na) = req.from() else {
            return reject(self, 400, "Bad Request: no From");
        };
        let header_expires = match req.headers.get("Expires") {
            Some(v) => match parse_expires(v) {
                Some(e) => Some(e),
                None => return reject(self, 400, "Bad Request: Expires"),
            },
            None => None,
        };
        let values: Vec<&str> = req.headers.get_all("Contact").collect();
        let star = values.contains(&"*");
        if star && (values.len() != 1 || header_expires != Some(0)) {
            // §10.3 step 6.
            return reject(self, 400, "Bad Request: Contact * needs Expires: 0 alone");
        }
        let contact = match values.first() {
            Some(v) if !star => match NameAddr::parse(v) {
                Ok(c) => Some(c),
                Err(_) => return reject(self, 400, "Bad Request: Contact"),
            },
            _ => None,
        };
        let expires = contact.as_ref().map(|c| {
            let asked = c
                .params
                .value("expires")
                .and_then(parse_expires)
                .or(header_expires)
                .unwrap_or(DEFAULT_EXPIRES);
            if reg.max_expires > 0 {
                asked.min(reg.max_expires)
            } else {
                asked
            }
        });
        if let Some(e) = expires {
            if e > 0 && e < reg.min_expires {
                let mut r = req.response(423, "Interval Too Brief");
                r.headers.push("Min-Expires", reg.min_expires.to_string());
                self.respond(now, &key, r);
                return;
            }
        }

        let peer = reg.peer();
        let (kind, call_id, from_tag, cseq, token) = match (&contact, expires) {
            (Some(c), Some(e)) => {
                let ident =
                    self.reg
                        .bindings
                        .prepare(now, &aor, &user, &c.uri, from, &mut self.ids);
                let kind = if e == 0 {
                    Kind::Unbind(ident.id)
                } else {
                    Kind::Bind(ident.id)
                };
                (
                    kind,
                    ident.call_id,
                    ident.from_tag,
                    ident.cseq,
                    Some(ident.token),
                )
            }
            _ => {
                // Queries and `*` have no registration of their own: a fresh Call-ID removes
                // all bindings of the AOR whatever their CSeq (§10.3 step 7).
                let kind = if star {
                    Kind::UnbindAll(aor.clone())
                } else {
                    Kind::Query
                };
                (
                    kind,
                    format!("{}@tapir", self.ids.next()),
                    self.ids.next(),
                    1,
                    None,
                )
            }
        };

        let mut out = Request::new(Method::Register, req.uri.clone());
        out.headers.push("Via", self.via(peer));
        out.headers.push("Max-Forwards", (mf - 1).to_string());
        let mut f = from_na;
        f.params.set("tag", Some(from_tag));
        out.headers.push("From", f.to_string());
        out.headers.push("To", crate::strip_tag(&to).to_string());
        out.headers.push("Call-ID", call_id);
        out.headers.push("CSeq", format!("{cseq} REGISTER"));
        if star {
            out.headers.push("Contact", "*");
        } else if let (Some(t), Some(e)) = (&token, expires) {
            let local = self.local_addr(peer);
            let transport = if peer.transport == Transport::Udp {
                String::new()
            } else {
                format!(
                    ";transport={}",
                    peer.transport.as_str().to_ascii_lowercase()
                )
            };
            out.headers.push(
                "Contact",
                format!(
                    "<sip:{t}@{}:{}{transport}>;expires={e}",
                    sip::Host::from(local.ip()),
                    local.port()
                ),
            );
        }
        if let Some(e) = header_expires {
            let e = if reg.max_expires > 0 && !star {
                e.min(reg.max_expires)
            } else {
                e
            };
            out.headers.push("Expires", e.to_string());
        }
        for (n, v) in &req.headers.0 {
            if !REGISTER_LOCAL_HEADERS
                .iter()
                .any(|h| h.eq_ignore_ascii_case(n))
            {
                out.headers.push(n, v.clone());
            }
        }
        out.body = req.body.clone();
        tracing::debug!(%aor, ?kind, "relaying REGISTER");
        let k = self.tx.send_request(now, out, peer);
        self.reg.pending.insert(
            k,
            Pending {
                server: key,
                request: req,
                from,
                kind,
                token,
            },
        );
    }

    /// Takes a response to a relayed REGISTER; false when `key` is not one.
    pub(crate) fn on_register_response(
        &mut self,
        now: Instant,
        key: &TxKey,
        resp: &Response,
    ) -> bool {
        if !self.reg.pending.contains_key(key) {
            return false;
        }
        if resp.status < 200 {
            return true;
        }
        let Some(p) = self.reg.pending.remove(key) else {
            return true;
        };
        let mut r = p.request.response(resp.status, &resp.reason);
        let tag = resp.to_tag().unwrap_or_else(|| self.ids.next());
        crate::set_to_tag(&mut r, &tag);
        for (n, v) in &resp.headers.0 {
            if !RESPONSE_LOCAL_HEADERS
                .iter()
                .any(|h| h.eq_ignore_ascii_case(n))
            {
                r.headers.push(n, v.clone());
            }
        }
        if (200..300).contains(&resp.status) {
            self.apply_grant(now, &p, resp);
            self.push_contacts(now, resp, &mut r);
        }
        self.respond(now, &p.server, r);
        true
    }

    /// Updates the binding table from a registrar's 2xx.
    fn apply_grant(&mut self, now: Instant, p: &Pending, resp: &Response) {
        let header_expires = resp.headers.get("Expires").and_then(parse_expires);
        // The registrar lists every current binding of the AOR; ours is the one with our
        // contact user, and its expires parameter is what was granted (§10.3 step 8).
        let granted = p.token.as_deref().and_then(|token| {
            resp.headers
                .get_all("Contact")
                .filter_map(|v| NameAddr::parse(v).ok())
                .find(|c| c.uri.user() == Some(token))
                .map(|c| {
                    c.params
                        .value("expires")
                        .and_then(parse_expires)
                        .or(header_expires)
                        .unwrap_or(DEFAULT_EXPIRES)
                })
        });
        match &p.kind {
            Kind::Bind(id) => {
                // Absent from the 2xx means the registrar holds no binding for us.
                let g = granted.unwrap_or(0);
                self.reg.bindings.confirm(now, *id, g, p.from);
                tracing::info!(expires = g, "registration relayed");
            }
            Kind::Unbind(id) => {
                self.reg.bindings.remove(*id);
            }
            Kind::UnbindAll(aor) => {
                self.reg.bindings.remove_aor(aor);
            }
            Kind::Query => {}
        }
    }

    /// Contacts of the registrar's 2xx as the phone must see them: tapir's contacts become the
    /// phones' own, with the time they have left; others pass unchanged.
    fn push_contacts(&self, now: Instant, resp: &Response, r: &mut Response) {
        for v in resp.headers.get_all("Contact") {
            let Ok(c) = NameAddr::parse(v) else {
                continue;
            };
            let ours = c.uri.sip().is_some_and(|s| {
                let host = s.host.ip();
                self.config
                    .sip_addrs
                    .iter()
                    .any(|a| Some(a.ip()) == host && s.port.unwrap_or(5060) == a.port())
            });
            if !ours {
                r.headers.push("Contact", v.to_string());
                continue;
            }
            let Some(b) = c.uri.user().and_then(|u| self.reg.bindings.by_token(u)) else {
                continue;
            };
            if !b.live(now) {
                continue;
            }
            let mut na = NameAddr::new(b.contact.clone());
            na.params.set("expires", Some(b.remaining(now).to_string()));
            r.headers.push("Contact", na.to_string());
        }
    }

    /// A relayed REGISTER got no answer (Timer F, or the registrar unreachable over TCP or
    /// TLS): answered `code`; false when `key` is not one.
    pub(crate) fn on_register_failure(
        &mut self,
        now: Instant,
        key: &TxKey,
        code: u16,
        reason: &str,
    ) -> bool {
        let Some(p) = self.reg.pending.remove(key) else {
            return false;
        };
        tracing::info!(registrar = %self.reg.settings.as_ref().map(|r| r.peer().addr.to_string()).unwrap_or_default(), code, "registrar did not answer");
        let r = p.request.response(code, reason);
        self.respond(now, &p.server, r);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> IdGen {
        IdGen { seed: 7, n: 0 }
    }

    fn udp(s: &str) -> Peer {
        Peer {
            addr: s.parse().unwrap(),
            transport: Transport::Udp,
        }
    }

    fn uri(s: &str) -> Uri {
        Uri::parse(s).unwrap()
    }

    #[test]
    fn config_compiles_and_checks() {
        let r = RegistrarConfig::new("sip:192.0.2.10:5080;transport=tcp")
            .compile()
            .unwrap();
        assert_eq!(r.peer().addr, "192.0.2.10:5080".parse().unwrap());
        assert_eq!(r.peer().transport, Transport::Tcp);
        assert!(r.is_source("192.0.2.10".parse().unwrap()));
        assert!(!r.is_source("192.0.2.11".parse().unwrap()));

        let mut c = RegistrarConfig::new("sip:192.0.2.10");
        c.sources = vec!["198.51.100.0/24".into()];
        let r = c.compile().unwrap();
        assert_eq!(r.peer().addr.port(), 5060);
        assert!(r.is_source("198.51.100.77".parse().unwrap()));
        assert!(!r.is_source("192.0.2.10".parse().unwrap()));

        let e = RegistrarConfig::new("sip:pbx.example.com")
            .compile()
            .unwrap_err()
            .to_string();
        assert!(e.contains("registrar") && e.contains("IP address"), "{e}");
        let mut c = RegistrarConfig::new("sip:192.0.2.10");
        c.min_expires = 600;
        c.max_expires = 300;
        assert!(c.compile().is_err());
        let mut c = RegistrarConfig::new("sip:192.0.2.10");
        c.sources = vec!["nonsense".into()];
        assert!(c.compile().is_err());
    }

    #[test]
    fn relay_identity_is_stable_per_aor_and_contact() {
        let t0 = Instant::now();
        let mut b = Bindings::default();
        let mut g = ids();
        let phone = udp("203.0.113.5:40000");
        let c1 = uri("sip:alice@10.0.0.2:5060");
        let a = b.prepare(t0, "sip:alice@pbx", "alice", &c1, phone, &mut g);
        let a2 = b.prepare(t0, "sip:alice@pbx", "alice", &c1, phone, &mut g);
        assert_eq!(a.call_id, a2.call_id);
        assert_eq!(a.from_tag, a2.from_tag);
        assert_eq!(a.token, a2.token);
        assert_eq!((a.cseq, a2.cseq), (1, 2));
        assert!(a.token.starts_with("alice~"));
        // Another device of the same user is another registration.
        let other = b.prepare(
            t0,
            "sip:alice@pbx",
            "alice",
            &uri("sip:alice@10.0.0.3"),
            phone,
            &mut g,
        );
        assert_ne!(other.call_id, a.call_id);
        assert_ne!(other.token, a.token);
        assert_eq!(other.cseq, 1);
    }

    #[test]
    fn grant_lookup_and_expiry_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut b = Bindings::default();
        let mut g = ids();
        let first = udp("203.0.113.5:40000");
        let c = uri("sip:alice@10.0.0.2:5060");
        let id = b.prepare(t0, "sip:alice@pbx", "alice", &c, first, &mut g);
        // Challenged, not yet granted: nothing to call.
        assert!(b.lookup(t0, &id.token).is_none());
        assert_eq!(b.live(t0), 0);
        assert_eq!(b.next_deadline(), Some(t0 + PENDING_IDLE));

        // The refresh came through another NAT mapping: calls follow the latest one.
        let nat = udp("203.0.113.5:40001");
        assert!(b.confirm(t0, id.id, 120, nat));
        let found = b.lookup(t0, &id.token).unwrap();
        assert_eq!(found.peer, nat);
        assert_eq!(found.contact, c);
        assert_eq!(b.lookup(t0, "alice").unwrap().token, id.token);
        assert!(b.lookup(t0, "bob").is_none());
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(120)));

        let t1 = t0 + Duration::from_secs(119);
        assert_eq!(b.expire(t1), 0);
        assert!(b.lookup(t1, &id.token).is_some());
        assert_eq!(b.lookup(t1, &id.token).unwrap().remaining(t1), 1);
        // At the instant of expiry the binding is no longer usable, even before the timer.
        let t2 = t0 + Duration::from_secs(120);
        assert!(b.lookup(t2, &id.token).is_none());
        assert_eq!(b.expire(t2), 1);
        assert!(b.by_token(&id.token).is_none());
        assert_eq!(b.next_deadline(), None);
        // A new REGISTER after expiry starts a new registration.
        let again = b.prepare(t2, "sip:alice@pbx", "alice", &c, first, &mut g);
        assert_ne!(again.call_id, id.call_id);
    }

    #[test]
    fn refresh_moves_the_deadline_and_zero_removes() {
        let t0 = Instant::now();
        let mut b = Bindings::default();
        let mut g = ids();
        let p = udp("198.51.100.1:5060");
        let c = uri("sip:100@198.51.100.1");
        let id = b.prepare(t0, "sip:100@pbx", "100", &c, p, &mut g);
        b.confirm(t0, id.id, 60, p);
        let t1 = t0 + Duration::from_secs(50);
        let id2 = b.prepare(t1, "sip:100@pbx", "100", &c, p, &mut g);
        assert_eq!(id2.id, id.id);
        // While the refresh is in flight, the old grant still holds.
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(60)));
        b.confirm(t1, id.id, 60, p);
        assert_eq!(b.expire(t0 + Duration::from_secs(61)), 0);
        assert!(b.lookup(t0 + Duration::from_secs(61), "100").is_some());
        assert!(b.confirm(t1, id.id, 0, p));
        assert!(b.lookup(t1, "100").is_none());
        assert_eq!(b.next_deadline(), None);
        assert!(!b.confirm(t1, id.id, 60, p), "removed ids stay removed");
    }

    #[test]
    fn star_removes_every_binding_of_the_aor_only() {
        let t0 = Instant::now();
        let mut b = Bindings::default();
        let mut g = ids();
        let p = udp("198.51.100.1:5060");
        for (aor, user, c) in [
            ("sip:a@pbx", "a", "sip:a@10.0.0.1"),
            ("sip:a@pbx", "a", "sip:a@10.0.0.2"),
            ("sip:b@pbx", "b", "sip:b@10.0.0.3"),
        ] {
            let id = b.prepare(t0, aor, user, &uri(c), p, &mut g);
            b.confirm(t0, id.id, 300, p);
        }
        assert_eq!(b.live(t0), 3);
        assert_eq!(b.remove_aor("sip:a@pbx"), 2);
        assert_eq!(b.live(t0), 1);
        assert!(b.lookup(t0, "a").is_none());
        assert!(b.lookup(t0, "b").is_some());
        assert_eq!(b.iter().count(), 1);
    }

    #[test]
    fn unanswered_registrations_are_forgotten_after_idling() {
        let t0 = Instant::now();
        let mut b = Bindings::default();
        let mut g = ids();
        let p = udp("198.51.100.1:5060");
        let id = b.prepare(t0, "sip:a@pbx", "a", &uri("sip:a@10.0.0.1"), p, &mut g);
        assert_eq!(b.expire(t0 + PENDING_IDLE - Duration::from_secs(1)), 0);
        assert!(b.by_token(&id.token).is_some());
        assert_eq!(b.expire(t0 + PENDING_IDLE), 0, "not a live binding");
        assert!(b.by_token(&id.token).is_none());
        assert_eq!(b.iter().count(), 0);
    }

    #[test]
    fn aor_and_expires_parsing() {
        assert_eq!(
            canonical_aor(&uri("sip:Alice@PBX.Example.com:5060;transport=tcp")),
            Some(("sip:Alice@pbx.example.com".into(), "Alice".into()))
        );
        assert_eq!(canonical_aor(&uri("sip:pbx.example.com")), None);
        assert_eq!(canonical_aor(&uri("tel:+123")), None);
        assert_eq!(parse_expires(" 3600 "), Some(3600));
        assert_eq!(parse_expires("99999999999"), Some(u32::MAX));
        assert_eq!(parse_expires("-1"), None);
        assert_eq!(parse_expires(""), None);
    }
}
