//! Per-call state of the features that keep a call alive and followable across a real phone
//! system: the contact identity a transfer carries over ([`crate::transfer`]), the session
//! timer of each leg and the hold state that media supervision needs ([`crate::timers`]).

use std::time::{Duration, Instant};

use crate::{CallId, Leg};

/// What a call inherited from its route, so a transferred segment can keep it.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallMeta {
    pub route: String,
    pub direction: Option<String>,
    pub record: Option<String>,
    pub format: Option<String>,
    pub srtp: crate::secure::RouteSrtp,
}

/// Who keeps one leg's session alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The party on this leg refreshes; tapir ends the call if it stops.
    Watch,
    /// tapir is the refresher in this party's eyes, and fulfils it by relaying the refreshes
    /// of the party on the other leg, whose own timer is watched.
    Relayed,
    /// tapir refreshes this leg itself: the other side runs no timer.
    Own,
}

/// RFC 4028 state of one leg's dialog.
#[derive(Debug, Clone)]
pub(crate) struct LegTimer {
    /// Negotiated Session-Expires.
    pub interval: Duration,
    pub role: Role,
    pub refreshed_at: Instant,
    /// A refresh tapir sent is waiting for its answer.
    pub in_flight: bool,
    /// Retry a refresh that met glare (491) or an unsupported UPDATE at this time.
    pub retry_at: Option<Instant>,
}

/// Session-Expires below this is out of RFC 4028 (§4: Min-SE is never below 90 s); tapir never
/// refreshes or expires faster, whatever the parties wrote.
pub(crate) const MIN_SE: Duration = Duration::from_secs(90);

/// Longest session interval tapir keeps. RFC 4028 sets no ceiling, but a deadline must be an
/// `Instant` it can compute: a value near `u64::MAX` seconds from a peer would overflow it.
pub(crate) const MAX_SE: Duration = Duration::from_secs(86_400);

impl LegTimer {
    pub fn new(interval: Duration, role: Role, now: Instant) -> Self {
        Self {
            interval: interval.clamp(MIN_SE, MAX_SE),
            role,
            refreshed_at: now,
            in_flight: false,
            retry_at: None,
        }
    }

    /// When this leg needs attention: tapir's refresh at half the interval (§7.4), or, when
    /// the party refreshes, the point where §10 tells the other side to give up: the
    /// interval minus a third of it, at most 32 s early. Nothing for a relayed leg.
    pub fn due(&self) -> Option<Instant> {
        match self.role {
            Role::Own if self.in_flight => None,
            Role::Own => Some(
                self.retry_at
                    .unwrap_or(self.refreshed_at + self.interval / 2),
            ),
            Role::Relayed => None,
            Role::Watch => {
                let early = (self.interval / 3).min(Duration::from_secs(32));
                Some(self.refreshed_at + self.interval - early)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LegExtra {
    /// Whether this party sends media according to its latest SDP.
    pub sends: bool,
    /// The SDP tapir last sent on this leg, re-offered unchanged by a refresh re-INVITE.
    pub last_sdp: Option<Vec<u8>>,
    /// The party listed UPDATE in Allow: refreshes use UPDATE without a body.
    pub allows_update: bool,
    pub timer: Option<LegTimer>,
}

impl Default for LegExtra {
    fn default() -> Self {
        Self {
            sends: true,
            last_sdp: None,
            allows_update: false,
            timer: None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CallExtra {
    /// The first call of a chain of transfers; the call's own id when it was not transferred.
    pub contact: CallId,
    /// Opaque contact label the IO layer gave this call; handed on to transferred segments.
    pub label: Option<String>,
    pub meta: CallMeta,
    pub legs: [LegExtra; 2],
    /// Since when media is expected from both sides: the answer, or the end of the last hold.
    pub active_since: Option<Instant>,
}

pub(crate) fn idx(leg: Leg) -> usize {
    match leg {
        Leg::A => 0,
        Leg::B => 1,
    }
}

impl CallExtra {
    pub fn new(contact: CallId, label: Option<String>, meta: CallMeta) -> Self {
        Self {
            contact,
            label,
            meta,
            legs: [LegExtra::default(), LegExtra::default()],
            active_since: None,
        }
    }

    pub fn leg(&self, l: Leg) -> &LegExtra {
        &self.legs[idx(l)]
    }

    pub fn leg_mut(&mut self, l: Leg) -> &mut LegExtra {
        &mut self.legs[idx(l)]
    }

    /// On hold: one of the parties does not send (sendonly/recvonly/inactive or a null
    /// connection address), so silence on the wire is expected.
    pub fn on_hold(&self) -> bool {
        !(self.legs[0].sends && self.legs[1].sends)
    }

    /// The earliest session-timer deadline of the call.
    pub fn next_due(&self) -> Option<Instant> {
        self.legs
            .iter()
            .filter_map(|l| l.timer.as_ref().and_then(LegTimer::due))
            .min()
    }
}
