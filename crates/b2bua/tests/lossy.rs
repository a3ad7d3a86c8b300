//! The call flows again, with every link losing, duplicating and reordering datagrams.
//!
//! Retransmissions must carry each call to the same end as on a clean network, a retransmitted
//! INVITE must never become a second call, and nothing may leak. Several seeds per flow; each
//! seed is one exact, repeatable run.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use b2bua::Outcome;
use common::*;
use sip::{HeaderAccess, Method};

const SEEDS: std::ops::RangeInclusive<u64> = 1..=40;

fn lossy_world(seed: u64) -> World {
    // 25 % loss, 10 % duplication, 5–150 ms of jitter (so reordering) on every link.
    World::new(Setup {
        seed,
        link: Link::lossy(25, 10),
        ..Setup::default()
    })
}

/// Checks that tapir opened exactly one call and leg B exactly one INVITE transaction.
fn exactly_one_call(w: &World, seed: u64) {
    assert_eq!(
        w.started(),
        1,
        "seed {seed}: retransmitted INVITEs became calls"
    );
    assert_eq!(w.opened().len(), 1, "seed {seed}");
    let initial: Vec<_> = w
        .callee
        .requests(Method::Invite)
        .into_iter()
        .filter(|r| r.to_tag().is_none())
        .collect();
    assert_eq!(initial.len(), 1, "seed {seed}: the callee saw one call");
    // On the wire, every leg-B INVITE without a To tag is the same transaction.
    let b_invites: HashSet<(String, String)> = w
        .net
        .requests(TAPIR, CALLEE, Method::Invite)
        .iter()
        .filter(|(_, r)| r.to_tag().is_none())
        .map(|(_, r)| {
            (
                r.call_id().to_string(),
                r.top_via().unwrap().branch().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(b_invites.len(), 1, "seed {seed}: {b_invites:?}");
}

fn established(w: &World) -> bool {
    w.caller.confirmed && w.callee.confirmed && w.callee.acks_received > 0
}

#[test]
fn calls_complete_under_loss_duplication_and_reordering() {
    let (mut lost, mut dups, mut retrans) = (0, 0, 0);
    for seed in SEEDS {
        for callee_hangs_up in [false, true] {
            let mut w = lossy_world(seed);
            w.caller.invite(w.now, "1000", true);
            assert!(
                w.run_until(Duration::from_secs(30), established),
                "seed {seed}: not established"
            );
            w.run_for(Duration::from_secs(5));
            if callee_hangs_up {
                w.callee.bye(w.now);
            } else {
                w.caller.bye(w.now);
            }
            w.run_for(Duration::from_secs(40));
            assert_eq!(w.caller.invite_finals, vec![200], "seed {seed}");
            let (hanger, other) = if callee_hangs_up {
                (&w.callee, &w.caller)
            } else {
                (&w.caller, &w.callee)
            };
            assert_eq!(hanger.last_final(Method::Bye), Some(200), "seed {seed}");
            assert_eq!(other.requests(Method::Bye).len(), 1, "seed {seed}");
            assert_eq!(w.callee.acks().len(), 1, "seed {seed}: one ACK for one 2xx");
            exactly_one_call(&w, seed);
            assert_eq!(w.answered(), 1, "seed {seed}");
            assert_eq!(w.outcomes(), vec![Outcome::Completed], "seed {seed}");
            assert_eq!(w.closes(), 1, "seed {seed}");
            w.assert_clean();
            assert_eq!(w.caller.timeouts() + w.callee.timeouts(), 0, "seed {seed}");
            lost += w.net.lost;
            dups += w.net.duplicated;
            retrans += w.tapir.tx_stats().retransmissions_sent;
        }
    }
    assert!(lost > 200, "the network really lost datagrams ({lost})");
    assert!(dups > 50, "and duplicated some ({dups})");
    assert!(retrans > 50, "tapir retransmitted ({retrans})");
}

#[test]
fn delayed_offer_completes_under_loss() {
    for seed in SEEDS {
        let mut w = lossy_world(seed);
        w.caller.invite(w.now, "1000", false);
        assert!(
            w.run_until(Duration::from_secs(30), established),
            "seed {seed}"
        );
        w.run_for(Duration::from_secs(5));
        assert_eq!(w.callee.acks().len(), 1, "seed {seed}");
        assert!(
            w.callee.acks()[0].has_sdp(),
            "seed {seed}: answer relayed\n{}",
            w.dump()
        );
        w.callee.bye(w.now);
        w.run_for(Duration::from_secs(40));
        exactly_one_call(&w, seed);
        assert_eq!(w.outcomes(), vec![Outcome::Completed], "seed {seed}");
        w.assert_clean();
    }
}

#[test]
fn busy_and_cancel_under_loss() {
    for seed in SEEDS {
        let mut w = lossy_world(seed);
        w.callee.answer = Answer::Reject {
            ring: Duration::from_millis(300),
            status: 486,
        };
        w.caller.invite(w.now, "1000", true);
        w.run_for(Duration::from_secs(40));
        assert_eq!(w.caller.invite_finals, vec![486], "seed {seed}");
        exactly_one_call(&w, seed);
        assert_eq!(w.outcomes(), vec![Outcome::Rejected(486)], "seed {seed}");
        w.assert_clean();

        let mut w = lossy_world(seed + 1000);
        w.callee.answer = Answer::RingForever;
        w.caller.invite(w.now, "1000", true);
        assert!(
            // A lost 180 is never repeated, so wait for any provisional and the callee.
            w.run_until(Duration::from_secs(30), |w| w.callee.incoming.is_some()
                && !w.caller.statuses(Method::Invite).is_empty()),
            "seed {seed}\n{}",
            w.dump()
        );
        w.caller.cancel(w.now);
        w.run_for(Duration::from_secs(40));
        assert_eq!(w.caller.invite_finals, vec![487], "seed {seed}");
        assert_eq!(
            w.caller.last_final(Method::Cancel),
            Some(200),
            "seed {seed}"
        );
        exactly_one_call(&w, seed);
        assert_eq!(w.outcomes(), vec![Outcome::Cancelled], "seed {seed}");
        w.assert_clean();
    }
}

/// Runs until `who`'s last request of `method` (sent just before) has a final answer.
fn final_of(w: &mut World, caller: bool, method: Method, seed: u64) -> u16 {
    let before = |w: &World| {
        let ua = if caller { &w.caller } else { &w.callee };
        ua.finals.iter().filter(|(m, _)| *m == method).count()
    };
    let n = before(w);
    let done = w.run_until(Duration::from_secs(70), |w| before(w) > n);
    assert!(done, "seed {seed}: no final for {method}\n{}", w.dump());
    let ua = if caller { &w.caller } else { &w.callee };
    let status = ua.last_final(method.clone()).unwrap_or(0);
    if status != 200 {
        // Shown only when the caller's assertion fails.
        eprintln!("seed {seed}: {method} ended with {status}\n{}", w.dump());
    }
    status
}

#[test]
fn hold_resume_and_info_under_loss() {
    for seed in SEEDS {
        let mut w = lossy_world(seed);
        w.call();
        w.run_for(Duration::from_secs(3));
        w.caller.reinvite(w.now, sdp::Direction::SendOnly);
        assert_eq!(
            final_of(&mut w, true, Method::Invite, seed),
            200,
            "seed {seed}"
        );
        w.callee
            .request(w.now, Method::Info, Some(("text/plain", b"1".to_vec())));
        assert_eq!(
            final_of(&mut w, false, Method::Info, seed),
            200,
            "seed {seed}"
        );
        assert_eq!(w.caller.requests(Method::Info).len(), 1, "seed {seed}");
        w.callee.reinvite(w.now, sdp::Direction::SendRecv);
        assert_eq!(
            final_of(&mut w, false, Method::Invite, seed),
            200,
            "seed {seed}"
        );
        assert_eq!(
            w.updates(b2bua::Leg::A).last().map(|u| u.1),
            Some(true),
            "seed {seed}"
        );
        w.caller.bye(w.now);
        assert_eq!(
            final_of(&mut w, true, Method::Bye, seed),
            200,
            "seed {seed}"
        );
        assert_eq!(w.outcomes(), vec![Outcome::Completed], "seed {seed}");
        w.assert_clean();
    }
}
