//! Authentication pass-through (RFC 3261 §22).
//!
//! tapir holds no credentials. A 401/407 from the far side is relayed to the caller like any
//! final response, WWW-Authenticate/Proxy-Authenticate included, and the caller's retry, which
//! carries Authorization/Proxy-Authorization, is relayed like any INVITE. What tapir adds is
//! the leg B identity of the retry: §22.2 wants a retried request to keep the Call-ID and From
//! tag with the next CSeq, and servers count on it (a nonce may be bound to its Call-ID, the
//! retry counter is per dialog). So for a short while after a challenge, tapir remembers leg
//! B's Call-ID, From tag and CSeq under the caller's Call-ID and From tag, and the retry's leg
//! B continues them.

use crate::ttl_map::TtlMap;
use std::time::{Duration, Instant};

use sip::{HeaderAccess, Request};

/// How long a challenge waits for its retry; phones retry at once, a person typing a
/// password takes longer.
const CHALLENGE_TTL: Duration = Duration::from_secs(60);

/// Bound on remembered challenges, so a flood of challenged INVITEs cannot grow memory.
const MAX_CHALLENGES: usize = 8192;

#[derive(Debug, Clone)]
struct Challenged {
    b_call_id: String,
    b_tag: String,
    b_cseq: u32,
    a_cseq: u32,
}

/// Leg B identity a retried INVITE continues: Call-ID, From tag and its new CSeq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retry {
    pub b_call_id: String,
    pub b_tag: String,
    pub b_cseq: u32,
}

#[derive(Debug)]
pub(crate) struct Challenges {
    /// (leg A Call-ID, leg A From tag) → the challenged leg B.
    map: TtlMap<(String, String), Challenged>,
}

impl Default for Challenges {
    fn default() -> Self {
        Self {
            map: TtlMap::new(CHALLENGE_TTL, MAX_CHALLENGES),
        }
    }
}

impl Challenges {
    /// Remembers that the INVITE `a_req` was challenged on a leg B with this identity.
    pub fn remember(
        &mut self,
        now: Instant,
        a_req: &Request,
        b_call_id: &str,
        b_tag: &str,
        b_cseq: u32,
    ) {
        let Some(from_tag) = a_req.from_tag() else {
            return;
        };
        let key = (a_req.call_id().to_string(), from_tag);
        self.map.insert(
            now,
            key,
            Challenged {
                b_call_id: b_call_id.to_string(),
                b_tag: b_tag.to_string(),
                b_cseq,
                a_cseq: a_req.cseq().map(|c| c.seq).unwrap_or(0),
            },
        );
    }

    /// If `req` (a new INVITE on leg A) retries a challenged one, the leg B identity to use.
    pub fn take_retry(&mut self, now: Instant, req: &Request) -> Option<Retry> {
        let key = (req.call_id().to_string(), req.from_tag()?);
        let c = self.map.get(now, &key)?;
        // A retry has a higher CSeq (§22.2); anything else is a replay of the old request.
        if req.cseq().map(|c| c.seq).unwrap_or(0) <= c.a_cseq {
            return None;
        }
        let c = self.map.remove(&key)?;
        Some(Retry {
            b_call_id: c.b_call_id,
            b_tag: c.b_tag,
            b_cseq: c.b_cseq.saturating_add(1),
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

impl crate::B2bua {
    /// Leg B of `call` was challenged: remember its identity for the caller's retry.
    pub(crate) fn remember_challenge(
        &mut self,
        now: Instant,
        call: crate::CallId,
        a_req: &Request,
    ) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let d = &c.b.dialog;
        self.challenges
            .remember(now, a_req, &d.call_id, &d.local_tag, d.local_cseq);
    }

    /// Challenges waiting for their retry.
    pub fn pending_challenges(&self) -> usize {
        self.challenges.len()
    }
}
