//! Long and broken calls: session timers (RFC 4028) and media supervision.
//!
//! **Session timers.** Session-Expires, Min-SE and `Supported/Require: timer` are end-to-end
//! headers and cross tapir unchanged, and so do the refreshes (re-INVITE or UPDATE) the
//! parties send. tapir keeps the timer state of each leg's dialog from the 2xx answers it
//! relays, because it is a party to both dialogs:
//!
//! - When the far side answers with Session-Expires, both legs run that timer. On the leg
//!   whose party is the refresher tapir only watches; on the other leg tapir is the refresher
//!   in that party's eyes, and the relayed refreshes fulfil that role.
//! - When the caller asked for a timer and the far side does not support them (no
//!   Session-Expires in its 2xx), tapir answers for it: it adds Session-Expires (and `Require:
//!   timer` when the caller refreshes) to the 2xx, with the refresher the caller asked for,
//!   the caller itself if it supports timers and said nothing, else tapir.
//!
//! Where tapir is the refresher and no refresh crossed the leg for half the interval, it sends
//! one itself: UPDATE without a body when the party allows UPDATE, otherwise a re-INVITE that
//! offers the SDP tapir last sent on that leg, unchanged, so a held call stays held. A refresh
//! that fails (timeout, 408, 481 or any other final error except 491 glare, which is retried)
//! ends the call with BYE on both legs. Glare is avoided as RFC 3261 §14.1 asks: tapir's
//! re-INVITE waits while a party's re-INVITE crosses the call, and a party's re-INVITE that
//! arrives while tapir's is pending gets 491. Where a party is the refresher and no refresh arrived
//! by the deadline of §10 (the interval less a third, at most 32 s), tapir ends the call the
//! same way. Intervals below the 90 s floor of §4 are treated as 90 s.
//!
//! **Media supervision.** The relay in the IO layer sees packets; the core sees SDP. The IO
//! layer reports silence with [`B2bua::media_timeout`]; the core ends the call only when it
//! is answered, not on hold by either party's latest SDP, and has been so for the whole
//! silent period.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use sdp::Sdp;
use sip::{HeaderAccess, Method, Request, Response};

use crate::extra::{LegTimer, Role, MAX_SE, MIN_SE};
use crate::{B2bua, CallId, CallState, Leg, Outcome, Purpose};

/// How long to wait before retrying a refresh that met a 491 (RFC 3261 §14.1 asks for 2.1 to
/// 4 s when we own the Call-ID and 0 to 2 s otherwise; a fixed value inside both is fine).
const GLARE_RETRY: Duration = Duration::from_secs(2);

/// How long tapir's refresh re-INVITE waits when another INVITE is in progress on the call.
const REFRESH_BUSY_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresher {
    Uac,
    Uas,
}

/// `Session-Expires: 1800;refresher=uac` → (1800 s, Some(Uac)).
fn session_expires(h: &sip::Headers) -> Option<(Duration, Option<Refresher>)> {
    let v = h.get("Session-Expires")?;
    let mut parts = v.split(';');
    let secs: u64 = parts.next()?.trim().parse().ok()?;
    let mut refresher = None;
    for p in parts {
        if let Some((k, val)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("refresher") {
                refresher = match val.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => None,
                };
            }
        }
    }
    Some((Duration::from_secs(secs).min(MAX_SE), refresher))
}

fn lists(h: &sip::Headers, header: &str, token: &str) -> bool {
    h.get_all(header).any(|v| v.eq_ignore_ascii_case(token))
}

fn supports_timer(h: &sip::Headers) -> bool {
    lists(h, "Supported", "timer") || lists(h, "Require", "timer")
}

impl B2bua {
    /// The earliest session-timer deadline of any call (stale entries make early wake-ups,
    /// never late ones).
    pub(crate) fn session_deadline(&mut self) -> Option<Instant> {
        // Entries of calls that are gone would keep waking the driver (and stay in the heap)
        // until their time, as much as a whole session interval after the call ended.
        while let Some(&Reverse((_, call))) = self.wakeups.peek() {
            if self.calls.contains_key(&call) {
                break;
            }
            self.wakeups.pop();
        }
        self.wakeups.peek().map(|Reverse((t, _))| *t)
    }

    pub(crate) fn schedule_timers(&mut self, call: CallId) {
        if let Some(t) = self.calls.get(&call).and_then(|c| c.x.next_due()) {
            self.wakeups.push(Reverse((t, call)));
        }
    }

    /// Notes what a leg's latest SDP says about sending; called for every SDP a party sends.
    pub(crate) fn note_media(&mut self, call: CallId, leg: Leg, sends: bool) {
        let now = self.clock;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let was_held = c.x.on_hold();
        c.x.leg_mut(leg).sends = sends;
        if was_held && !c.x.on_hold() && c.x.active_since.is_some() {
            // Back from hold: silence before this point does not count.
            c.x.active_since = now;
        }
    }

    pub(crate) fn note_sdp_sent(&mut self, call: CallId, leg: Leg, body: &[u8]) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.x.leg_mut(leg).last_sdp = Some(body.to_vec());
        }
    }

    /// The caller's INVITE was answered with 2xx `resp`; `r` is the 2xx about to go to the
    /// caller.
    pub(crate) fn timers_on_answer(
        &mut self,
        now: Instant,
        call: CallId,
        a_req: &Request,
        resp: &Response,
        r: &mut Response,
    ) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.x.leg_mut(Leg::A).allows_update = lists(&a_req.headers, "Allow", "UPDATE");
            c.x.leg_mut(Leg::B).allows_update = lists(&resp.headers, "Allow", "UPDATE");
            c.x.active_since = Some(now);
        }
        self.timers_on_refresh(now, call, Leg::A, a_req, resp, r);
    }

    /// A 2xx to an INVITE or UPDATE sent by the party on `from_leg` crossed tapir: both
    /// dialogs are refreshed, and the timer is (re)negotiated as the answer says. `r` is the
    /// response about to go to `from_leg`.
    pub(crate) fn timers_on_refresh(
        &mut self,
        now: Instant,
        call: CallId,
        from_leg: Leg,
        req: &Request,
        resp: &Response,
        r: &mut Response,
    ) {
        let to_leg = from_leg.other();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match session_expires(&resp.headers) {
            Some((interval, refresher)) => {
                // §7.2: without a refresher parameter in a 2xx, the UAC refreshes.
                let uac_refreshes = refresher != Some(Refresher::Uas);
                // The requester is the UAC on `from_leg`; tapir was the UAC on `to_leg`.
                let (from_role, to_role) = if !uac_refreshes {
                    (Role::Relayed, Role::Watch)
                } else if supports_timer(&req.headers) || session_expires(&req.headers).is_some() {
                    (Role::Watch, Role::Relayed)
                } else {
                    // The answerer wants the requester to refresh, which knows nothing of
                    // timers: tapir does it on the answerer's leg.
                    (Role::Relayed, Role::Own)
                };
                let from_timer = (from_role != Role::Relayed || to_role != Role::Own)
                    .then(|| LegTimer::new(interval, from_role, now));
                c.x.leg_mut(from_leg).timer = from_timer;
                c.x.leg_mut(to_leg).timer = Some(LegTimer::new(interval, to_role, now));
            }
            None => {
                // The answering party runs no timer (§9: no Session-Expires, no timer).
                c.x.leg_mut(to_leg).timer = None;
                if let Some((asked, refresher)) = session_expires(&req.headers) {
                    // tapir answers for it on the requester's leg.
                    let refresher = match refresher {
                        Some(x) => x,
                        None if supports_timer(&req.headers) => Refresher::Uac,
                        None => Refresher::Uas,
                    };
                    let interval = asked.max(MIN_SE);
                    let (name, require) = match refresher {
                        Refresher::Uac => ("uac", true),
                        Refresher::Uas => ("uas", false),
                    };
                    r.headers.set(
                        "Session-Expires",
                        format!("{};refresher={name}", interval.as_secs()),
                    );
                    if require && !lists(&r.headers, "Require", "timer") {
                        r.headers.push("Require", "timer");
                    }
                    let role = match refresher {
                        Refresher::Uac => Role::Watch,
                        Refresher::Uas => Role::Own,
                    };
                    c.x.leg_mut(from_leg).timer = Some(LegTimer::new(interval, role, now));
                } else if let Some(t) = c.x.leg_mut(from_leg).timer.as_mut() {
                    // A re-INVITE or UPDATE without Session-Expires still refreshes.
                    t.refreshed_at = now;
                    t.retry_at = None;
                }
            }
        }
        self.schedule_timers(call);
    }

    /// Runs the session-timer deadlines that are due.
    pub(crate) fn run_session_timers(&mut self, now: Instant) {
        while let Some(&Reverse((t, call))) = self.wakeups.peek() {
            if t > now {
                break;
            }
            self.wakeups.pop();
            let Some(c) = self.calls.get(&call) else {
                continue;
            };
            // Skip stale entries: the call has a later deadline by now (it was rescheduled).
            if c.x.next_due().is_none_or(|d| d > now) {
                continue;
            }
            match c.state {
                CallState::Confirmed => {}
                CallState::Answered => {
                    // The caller's ACK is still due (delayed offer); look again shortly.
                    self.wakeups
                        .push(Reverse((now + Duration::from_secs(1), call)));
                    continue;
                }
                _ => continue,
            }
            for leg in [Leg::A, Leg::B] {
                let Some(c) = self.calls.get(&call) else {
                    break;
                };
                let Some(timer) = c.x.leg(leg).timer.as_ref() else {
                    continue;
                };
                if timer.due().is_none_or(|d| d > now) {
                    continue;
                }
                if timer.role == Role::Own {
                    self.send_refresh(now, call, leg);
                } else {
                    tracing::info!(call, leg = ?leg, "session expired without refresh; ending the call");
                    self.end_call(now, call);
                    break;
                }
            }
            self.schedule_timers(call);
        }
    }

    /// Sends tapir's own session refresh on `leg`.
    fn send_refresh(&mut self, now: Instant, call: CallId, leg: Leg) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let x = c.x.leg(leg);
        let Some(interval) = x.timer.as_ref().map(|t| t.interval) else {
            return;
        };
        let body = if x.allows_update {
            None
        } else {
            x.last_sdp.clone()
        };
        let method = if body.is_some() {
            Method::Invite
        } else {
            Method::Update
        };
        if method == Method::Invite && self.invite_in_progress(call, false) {
            // A party's re-INVITE is crossing this call (§14.1): when answered it refreshes
            // the leg itself; if not, try again shortly. No deadline: a second INVITE on the
            // dialog would get 500 (§14.2), which ends the call for sure, while the party
            // that holds its INVITE open rarely expires the session under it.
            if let Some(t) = self
                .calls
                .get_mut(&call)
                .and_then(|c| c.x.leg_mut(leg).timer.as_mut())
            {
                t.retry_at = Some(now + REFRESH_BUSY_RETRY);
            }
            return;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let Some(t) = c.x.leg_mut(leg).timer.as_mut() {
            t.in_flight = true;
            t.retry_at = None;
        }
        let l = c.leg_mut(leg);
        let mut req = l.dialog.request(method);
        let peer = l.peer;
        req.headers.push_front("Via", self.via(peer));
        req.headers.push("Contact", self.contact(peer));
        req.headers.push(
            "Session-Expires",
            format!("{};refresher=uac", interval.as_secs()),
        );
        req.headers.push("Supported", "timer");
        req.headers
            .push("User-Agent", self.config.user_agent.clone());
        if let Some(b) = body {
            req.headers.push("Content-Type", "application/sdp");
            req.body = b;
        }
        tracing::debug!(call, leg = ?leg, method = %req.method, "sending session refresh");
        let k = self.tx.send_request(now, req, peer);
        self.client.insert(k, (call, Purpose::Refresh(leg)));
    }

    /// The final answer to tapir's own refresh on `leg`.
    pub(crate) fn on_refresh_response(
        &mut self,
        now: Instant,
        call: CallId,
        leg: Leg,
        resp: Response,
    ) {
        let invite = resp.cseq().is_some_and(|c| c.method == Method::Invite);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if (200..300).contains(&resp.status) {
            if let Some(t) = c.x.leg_mut(leg).timer.as_mut() {
                t.in_flight = false;
                t.retry_at = None;
                t.refreshed_at = now;
                if let Some((interval, refresher)) = session_expires(&resp.headers) {
                    t.interval = interval.max(MIN_SE);
                    // The party may take over the refreshing (refresher=uas in our request).
                    if refresher == Some(Refresher::Uas) {
                        t.role = Role::Watch;
                    }
                }
            }
            if invite {
                self.ack_2xx(now, call, leg, &resp, None);
                if resp.has_sdp() {
                    if let Ok(s) = Sdp::parse(&resp.body) {
                        self.media_update(call, leg, &s);
                    }
                }
            }
            self.schedule_timers(call);
            return;
        }
        let x = c.x.leg_mut(leg);
        match resp.status {
            491 => {
                if let Some(t) = x.timer.as_mut() {
                    t.in_flight = false;
                    t.retry_at = Some(now + GLARE_RETRY);
                }
            }
            405 | 501 if !invite && x.last_sdp.is_some() => {
                // UPDATE is not supported after all: refresh with a re-INVITE at once.
                x.allows_update = false;
                if let Some(t) = x.timer.as_mut() {
                    t.in_flight = false;
                    t.retry_at = Some(now);
                }
            }
            422 => {
                // Our interval is below the party's Min-SE (§7.4): retry with its minimum.
                let min = resp
                    .headers
                    .get("Min-SE")
                    .and_then(|v| v.split(';').next()?.trim().parse::<u64>().ok());
                match (min, x.timer.as_mut()) {
                    (Some(m), Some(t))
                        if Duration::from_secs(m) > t.interval
                            && Duration::from_secs(m) <= MAX_SE =>
                    {
                        t.interval = Duration::from_secs(m);
                        t.in_flight = false;
                        t.retry_at = Some(now);
                    }
                    _ => {
                        tracing::info!(call, leg = ?leg, "session refresh refused; ending the call");
                        self.end_call(now, call);
                        return;
                    }
                }
            }
            _ => {
                tracing::info!(call, leg = ?leg, status = resp.status, "session refresh failed; ending the call");
                self.end_call(now, call);
                return;
            }
        }
        self.schedule_timers(call);
    }

    pub(crate) fn on_refresh_timeout(&mut self, now: Instant, call: CallId, leg: Leg) {
        tracing::info!(call, leg = ?leg, "session refresh unanswered; ending the call");
        self.end_call(now, call);
    }

    /// Ends an answered call from tapir's side because a party vanished: BYE on both legs.
    fn end_call(&mut self, now: Instant, call: CallId) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.outcome.get_or_insert(Outcome::Timeout);
        }
        self.hang_up(now, call);
    }

    /// The IO layer saw no RTP from either party of `call` for `idle`. Ends the call with BYE
    /// on both legs and returns `true`, unless the call is not answered yet, is on hold by
    /// either party's SDP, or has been answered or off hold for less than `idle` (the silence
    /// may date from before).
    pub fn media_timeout(&mut self, now: Instant, call: CallId, idle: Duration) -> bool {
        self.clock = Some(now);
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        if c.state != CallState::Confirmed || c.x.on_hold() {
            return false;
        }
        let Some(since) = c.x.active_since else {
            return false;
        };
        if now.saturating_duration_since(since) < idle {
            return false;
        }
        tracing::info!(
            call,
            idle_ms = idle.as_millis() as u64,
            "no media; ending the call"
        );
        self.end_call(now, call);
        true
    }

    /// Whether `call` is on hold by its latest SDP (`None` for an unknown call).
    pub fn on_hold(&self, call: CallId) -> Option<bool> {
        self.calls.get(&call).map(|c| c.x.on_hold())
    }

    /// The negotiated session interval of `call` on `leg`, and whether tapir refreshes it.
    pub fn session_timer(&self, call: CallId, leg: Leg) -> Option<(Duration, bool)> {
        let t = self.calls.get(&call)?.x.leg(leg).timer.as_ref()?;
        Some((t.interval, t.role == Role::Own))
    }
}

/// Whether the party that wrote `s` sends audio: a sending direction and a real connection
/// address (`c=0.0.0.0` is the RFC 2543 way to hold).
pub(crate) fn sdp_sends(s: &Sdp) -> bool {
    let Some(i) = s.audio_index() else {
        return false;
    };
    s.direction(i).sends()
        && s.media[i].port != 0
        && s.connection(i).is_some_and(|ip| !ip.is_unspecified())
}
