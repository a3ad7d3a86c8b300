//! Transfers: REFER (RFC 3515) from either party, INVITE with Replaces (RFC 3891), and the
//! contact identity a transferred call keeps.
//!
//! REFER, its 202 and the NOTIFYs carrying the sipfrag progress are in-dialog requests and
//! cross tapir like any other (see `relay_in_dialog`). Two things are added so that the call
//! that results from a transfer goes through tapir and is known as the same contact:
//!
//! - **Refer-To points at tapir.** The transferee usually cannot reach the address the
//!   referrer named (it is on the far side of tapir, often a private address), and if it
//!   could, the transferred call would bypass the recorder. So the Refer-To URI of a relayed
//!   REFER gets tapir's address and a `tapir-xfer` parameter naming a pending-transfer record;
//!   its user part and URI headers (`?Replaces=…` for an attended transfer) are kept. The
//!   transferee's INVITE then reaches tapir, which sends it to the original target: its host
//!   when that is an IP address, otherwise the referrer's side, which named it.
//! - **Replaces is translated.** An INVITE whose Replaces header names a dialog tapir holds
//!   (leg L of some call) goes to the party on the other leg of that call, with Replaces
//!   rewritten to that leg's dialog identifiers, so that party replaces its dialog with tapir;
//!   its BYE for the replaced dialog then ends the old call through tapir as usual. A Replaces
//!   naming a dialog tapir does not hold passes unchanged.
//!
//! The new call takes over the contact identity of the call it continues (the one the REFER
//! crossed, else the replaced one): [`crate::CallEvent::Transferred`] comes right before its
//! `Started`, carrying the contact's first call and the label the IO layer gave it with
//! [`B2bua::set_contact_label`]. Route name, direction and recording settings are inherited,
//! and the customer stays the customer: the transferee, or the party it is connected to.
//!
//! Pending transfers expire after two minutes; an INVITE that names an expired one is routed
//! like any other.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sip::transaction::Peer;
use sip::{Host, NameAddr, Request, Transport, Uri};

use crate::extra::CallMeta;
use crate::routing::{Route, RouteConfig, Routes, Side};
use crate::{B2bua, CallId, CallState, Leg};

/// URI parameter naming a pending transfer in a rewritten Refer-To.
pub(crate) const XFER_PARAM: &str = "tapir-xfer";

const TRANSFER_TTL: Duration = Duration::from_secs(120);

/// Bound on pending transfers, so REFER floods cannot grow memory.
const MAX_PENDING: usize = 8192;

#[derive(Debug, Clone)]
struct Pending {
    /// The call the REFER crossed.
    call: CallId,
    contact: CallId,
    label: Option<String>,
    /// The transferee (who will send the INVITE) was that call's customer.
    customer_is_transferee: bool,
    /// Refer-To as the referrer wrote it, without URI headers.
    target: Uri,
    referrer: Peer,
    meta: CallMeta,
}

#[derive(Debug, Default)]
pub(crate) struct Transfers {
    map: HashMap<String, (Instant, Pending)>,
    order: VecDeque<(Instant, String)>,
}

impl Transfers {
    fn insert(&mut self, now: Instant, token: String, p: Pending) {
        self.purge(now);
        while self.map.len() >= MAX_PENDING {
            let Some((_, k)) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&k);
        }
        let expires = now + TRANSFER_TTL;
        self.order.push_back((expires, token.clone()));
        self.map.insert(token, (expires, p));
    }

    fn get(&mut self, now: Instant, token: &str) -> Option<Pending> {
        self.purge(now);
        self.map.get(token).map(|(_, p)| p.clone())
    }

    /// Drops the transfers a REFER on `call` announced (their timer entries go by
    /// themselves).
    fn remove_call(&mut self, call: CallId) {
        self.map.retain(|_, (_, p)| p.call != call);
    }

    fn purge(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, k)) = self.order.pop_front() {
                self.map.remove(&k);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// What a new INVITE continues, and where it must go.
pub(crate) struct Link {
    /// Where leg B goes; `None` when the routing table decides (target is tapir itself, or
    /// not reachable over a transport tapir speaks).
    pub route: Option<Route>,
    pub previous: CallId,
    pub contact: CallId,
    pub label: Option<String>,
    pub replaced: Option<CallId>,
    /// Replaces header for leg B, translated to the other leg's dialog.
    pub replaces: Option<String>,
    pub meta: CallMeta,
}

struct ReplacesHeader {
    call_id: String,
    to_tag: String,
    from_tag: String,
    early_only: bool,
}

fn parse_replaces(v: &str) -> Option<ReplacesHeader> {
    let mut parts = v.split(';');
    let call_id = parts.next()?.trim();
    if call_id.is_empty() {
        return None;
    }
    let (mut to, mut from, mut early_only) = (None, None, false);
    for p in parts {
        let (k, val) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (p.trim(), None),
        };
        if k.eq_ignore_ascii_case("to-tag") {
            to = val;
        } else if k.eq_ignore_ascii_case("from-tag") {
            from = val;
        } else if k.eq_ignore_ascii_case("early-only") {
            early_only = true;
        }
    }
    Some(ReplacesHeader {
        call_id: call_id.to_string(),
        to_tag: to?.to_string(),
        from_tag: from?.to_string(),
        early_only,
    })
}

fn side(transferee_is_customer: bool) -> Side {
    // The transferee sends the new INVITE: it is leg A, the caller side, of the new call.
    if transferee_is_customer {
        Side::Caller
    } else {
        Side::Callee
    }
}

/// A route with no match criteria that sends leg B to `peer` with `target_uri`.
fn direct_route(meta: &CallMeta, target_uri: Uri, peer: Peer, customer: Side) -> Option<Route> {
    let t = match peer.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        _ => return None,
    };
    let cfg = RouteConfig {
        name: meta.route.clone(),
        source: Vec::new(),
        source_zone: None,
        user_prefix: None,
        user_pattern: None,
        target: format!("sip:{}:{}{t}", Host::from(peer.addr.ip()), peer.addr.port()),
        customer,
        direction: meta.direction.clone(),
        record: meta.record.clone(),
        format: meta.format.clone(),
        srtp: meta.srtp,
        tls: None,
        external: false,
    };
    let routes = Routes::compile(&[cfg], &HashMap::new()).ok()?;
    let mut r = routes.find(peer.addr.ip(), "")?.clone();
    r.target_uri = target_uri;
    Some(r)
}

impl B2bua {
    /// Gives `call` an opaque contact label (the recorder's contact id, say); calls that
    /// continue it after a transfer report the same label in
    /// [`crate::CallEvent::Transferred`].
    pub fn set_contact_label(&mut self, call: CallId, label: String) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.x.label = Some(label);
        }
    }

    /// The first call of the transfer chain `call` belongs to (itself when never transferred).
    pub fn contact_of(&self, call: CallId) -> Option<CallId> {
        self.calls.get(&call).map(|c| c.x.contact)
    }

    /// Transfers announced by a REFER whose INVITE has not arrived yet (and not expired).
    pub fn pending_transfers(&self) -> usize {
        self.transfers.len()
    }

    /// The REFER relayed on `call` was refused or got no answer, or the transferee reported
    /// that its transfer failed (a NOTIFY's `message/sipfrag` with a final status of 300 or
    /// more): the transfers it announced are dropped and [`CallEvent::TransferFailed`]
    /// tells the contact not to wait for a transferred call.
    pub(crate) fn transfer_failed(&mut self, call: CallId, status: u16) {
        self.transfers.remove_call(call);
        self.out
            .push_back(crate::Output::Call(crate::CallEvent::TransferFailed {
                call,
                status,
            }));
    }

    /// Points the Refer-To of a REFER relayed from `from_leg` at tapir (see the module docs).
    pub(crate) fn rewrite_refer_to(
        &mut self,
        now: Instant,
        call: CallId,
        from_leg: Leg,
        out: &mut Request,
    ) {
        let Some(mut na) = out
            .headers
            .get("Refer-To")
            .and_then(|v| NameAddr::parse(v).ok())
        else {
            return;
        };
        if na.uri.sip().is_none() {
            // tel: and other schemes are for the transferee's own dial plan.
            return;
        }
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let to = from_leg.other();
        let transferee = c.leg(to).peer;
        let mut target = na.uri.clone();
        let attended = target
            .sip()
            .and_then(|s| s.headers.as_deref())
            .is_some_and(|h| h.to_ascii_lowercase().contains("replaces="));
        if let Some(s) = target.sip_mut() {
            s.headers = None;
            s.params.remove(XFER_PARAM);
        }
        let target_user = target.user().unwrap_or("").to_owned();
        self.out
            .push_back(crate::Output::Call(crate::CallEvent::TransferRequested {
                call,
                attended,
                external: self.routes.is_external(&target_user),
                target: target_user,
            }));
        let pending = Pending {
            call,
            contact: c.x.contact,
            label: c.x.label.clone(),
            customer_is_transferee: c.customer == to,
            target,
            referrer: c.leg(from_leg).peer,
            meta: c.x.meta.clone(),
        };
        let token = self.ids.next();
        self.transfers.insert(now, token.clone(), pending);
        let local = self.local_addr(transferee);
        if let Some(s) = na.uri.sip_mut() {
            s.secure = false;
            s.host = Host::from(local.ip());
            s.port = Some(local.port());
            s.params.remove("maddr");
            s.params.remove("transport");
            if transferee.transport != Transport::Udp {
                s.params.set(
                    "transport",
                    Some(transferee.transport.as_str().to_ascii_lowercase()),
                );
            }
            s.params.set(XFER_PARAM, Some(token));
        }
        out.headers.set("Refer-To", na.to_string());
    }

    /// The dialog a Replaces header names, if tapir holds it: (call, leg, early-only).
    fn find_replaced(&self, r: &ReplacesHeader) -> Option<(CallId, Leg)> {
        // to-tag is the recipient's (tapir's) tag (RFC 3891 §3); some senders swap them.
        for tag in [&r.to_tag, &r.from_tag] {
            if let Some(&(call, leg)) = self.dialogs.get(&(r.call_id.clone(), tag.clone())) {
                let c = self.calls.get(&call)?;
                if matches!(c.state, CallState::Ending | CallState::Cancelling) {
                    return None;
                }
                if r.early_only && c.answered {
                    return None;
                }
                return Some((call, leg));
            }
        }
        None
    }

    /// What a new INVITE continues: a transfer tapir announced (Refer-To token) and/or a
    /// dialog it replaces. `None` for an ordinary call.
    pub(crate) fn transfer_link(&mut self, now: Instant, req: &Request) -> Option<Link> {
        let pending = req
            .uri
            .sip()
            .and_then(|s| s.params.value(XFER_PARAM))
            .map(str::to_string)
            .and_then(|t| self.transfers.get(now, &t));
        let replaces = req.headers.get("Replaces").and_then(parse_replaces);
        let replaced = replaces.as_ref().and_then(|r| self.find_replaced(r));
        if let Some((x, l)) = replaced {
            let c = self.calls.get(&x)?;
            let other = c.leg(l.other());
            let early = replaces.as_ref().is_some_and(|r| r.early_only);
            let replaces = other.dialog.remote_tag.as_ref().map(|rt| {
                format!(
                    "{};to-tag={rt};from-tag={}{}",
                    other.dialog.call_id,
                    other.dialog.local_tag,
                    if early { ";early-only" } else { "" }
                )
            });
            // The party that stays is the customer if it was one in the replaced call.
            let customer = match &pending {
                Some(p) => side(p.customer_is_transferee),
                None if c.customer == l.other() => Side::Callee,
                None => Side::Caller,
            };
            let meta = pending
                .as_ref()
                .map(|p| p.meta.clone())
                .unwrap_or_else(|| c.x.meta.clone());
            let route = direct_route(
                &meta,
                other.dialog.remote_target.clone(),
                other.peer,
                customer,
            );
            let (previous, contact, label) = match pending {
                Some(p) => (p.call, p.contact, p.label),
                None => (x, c.x.contact, c.x.label.clone()),
            };
            return Some(Link {
                route,
                previous,
                contact,
                label,
                replaced: Some(x),
                replaces,
                meta,
            });
        }
        let p = pending?;
        let named = p
            .target
            .sip()
            .and_then(|s| s.host.ip().map(|ip| (ip, s)))
            .map(|(ip, s)| Peer {
                addr: SocketAddr::new(ip, s.port.unwrap_or(5060)),
                transport: s
                    .params
                    .value("transport")
                    .and_then(Transport::parse)
                    .unwrap_or(Transport::Udp),
            });
        // A Refer-To may only steer the new call to a next hop tapir already knows (a route
        // target, the registrar, or the party that sent the REFER); any other host is not
        // followed, and the call goes to the referrer, which routes it by its user part.
        let peer = match named {
            Some(n)
                if n.addr == p.referrer.addr
                    || self.routes.has_target(n.addr)
                    || self.is_registrar(n.addr) =>
            {
                n
            }
            Some(n) => {
                tracing::info!(refer_to = %n.addr, "Refer-To names an unknown host; sending the transfer to the referrer");
                p.referrer
            }
            None => p.referrer,
        };
        let to_self = self.config.sip_addrs.contains(&peer.addr);
        let route = if to_self {
            None
        } else {
            direct_route(
                &p.meta,
                p.target.clone(),
                peer,
                side(p.customer_is_transferee),
            )
        };
        Some(Link {
            route,
            previous: p.call,
            contact: p.contact,
            label: p.label,
            replaced: None,
            replaces: None,
            meta: p.meta,
        })
    }
}
