//! Port-leak proof: 10,000 calls in a row, ending in every way a call can end, through a tapir
//! whose RTP pool holds exactly one port pair. A single pair not given back would refuse every
//! later call with 503, so each call must open media, and the pool must be whole again the
//! moment each call has ended. At the end no call and no transaction may be left.

mod common;

use std::time::Duration;

use b2bua::Outcome;
use common::*;
use sdp::Direction;
use sip::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    CallerHangsUp,
    CalleeHangsUp,
    Cancelled,
    Busy,
    NoAnswer,
    ByeWhileRinging,
    CancelCrossing200,
    DelayedOffer,
    HoldThenHangUp,
    /// The caller never ACKs the 2xx: tapir ends the call when Timer L runs out.
    NeverAcked,
    /// The caller hangs up while a re-INVITE is still waiting for the callee.
    ByeDuringReinvite,
}

const ENDS: [End; 11] = [
    End::CallerHangsUp,
    End::CalleeHangsUp,
    End::Cancelled,
    End::Busy,
    End::NoAnswer,
    End::ByeWhileRinging,
    End::CancelCrossing200,
    End::DelayedOffer,
    End::HoldThenHangUp,
    End::NeverAcked,
    End::ByeDuringReinvite,
];

const CALLS: usize = 10_000;
const MAX: Duration = Duration::from_secs(120);

fn expected(end: End) -> Outcome {
    match end {
        End::Cancelled | End::ByeWhileRinging | End::CancelCrossing200 => Outcome::Cancelled,
        End::Busy => Outcome::Rejected(486),
        End::NoAnswer => Outcome::Timeout,
        _ => Outcome::Completed,
    }
}

/// The caller has an early dialog: the 180 came through.
fn ringing(w: &World) -> bool {
    w.caller
        .dialog
        .as_ref()
        .is_some_and(|d| d.remote_tag.is_some())
}

fn answered(w: &World) -> bool {
    w.caller.confirmed && w.callee.confirmed
}

/// Runs one call to its end; panics with the call number on anything unexpected.
fn one_call(w: &mut World, i: usize, end: End) {
    let ctx = format!("call {i} ({end:?})");
    w.callee.in_dialog_delay = Duration::ZERO;
    w.caller.send_acks = true;
    w.callee.answer = match end {
        End::Cancelled | End::ByeWhileRinging => Answer::RingForever,
        End::Busy => Answer::Reject {
            ring: Duration::from_millis(200),
            status: 486,
        },
        End::CancelCrossing200 => Answer::Accept {
            ring: Duration::from_millis(300),
        },
        _ => Answer::Accept {
            ring: Duration::from_millis(100),
        },
    };
    if end == End::NoAnswer {
        w.net.set_link(TAPIR, CALLEE, Link::DEAD);
    }
    if end == End::CancelCrossing200 {
        w.net.set_link(CALLEE, TAPIR, Link::fixed(50));
    }
    if end == End::NeverAcked {
        w.caller.send_acks = false;
    }
    let ended_before = w.outcomes().len();
    let byes_before = w.caller.byes_received;
    let callee_byes = w.callee.byes_received;
    w.caller.invite(w.now, "1000", end != End::DelayedOffer);

    match end {
        End::CallerHangsUp | End::CalleeHangsUp | End::DelayedOffer | End::HoldThenHangUp => {
            assert!(w.run_until(MAX, answered), "{ctx}: not answered");
            w.run_for(Duration::from_millis(200));
            if end == End::HoldThenHangUp {
                w.callee.reinvite(w.now, Direction::Inactive);
                assert!(
                    w.run_until(MAX, |w| w.callee.invite.is_none()),
                    "{ctx}: hold"
                );
            }
            if end == End::CalleeHangsUp || end == End::DelayedOffer {
                w.callee.bye(w.now);
                assert!(
                    w.run_until(MAX, |w| w.callee.last_final(Method::Bye).is_some()),
                    "{ctx}"
                );
            } else {
                w.caller.bye(w.now);
                assert!(
                    w.run_until(MAX, |w| w.caller.last_final(Method::Bye).is_some()),
                    "{ctx}"
                );
            }
        }
        End::ByeDuringReinvite => {
            assert!(w.run_until(MAX, answered), "{ctx}: not answered");
            w.run_for(Duration::from_millis(200));
            w.callee.in_dialog_delay = Duration::from_millis(500);
            w.caller.reinvite(w.now, Direction::SendOnly);
            w.run_for(Duration::from_millis(100));
            w.caller.bye(w.now);
            assert!(
                w.run_until(MAX, |w| w.caller.invite.is_none()
                    && w.caller.last_final(Method::Bye).is_some()),
                "{ctx}"
            );
            // tapir answered the pending re-INVITE itself when the call ended.
            assert_eq!(w.caller.last_final(Method::Invite), Some(487), "{ctx}");
        }
        End::Cancelled | End::ByeWhileRinging => {
            assert!(w.run_until(MAX, ringing), "{ctx}: not ringing");
            if end == End::Cancelled {
                w.caller.cancel(w.now);
            } else {
                w.caller.bye(w.now);
            }
            assert!(
                w.run_until(MAX, |w| w.caller.invite.is_none()),
                "{ctx}: INVITE not answered"
            );
            assert_eq!(w.caller.invite_finals.last(), Some(&487), "{ctx}");
        }
        End::CancelCrossing200 => {
            assert!(w.run_until(MAX, |w| w.callee.confirmed), "{ctx}");
            w.caller.cancel(w.now);
            assert!(
                w.run_until(MAX, |w| w.caller.invite.is_none()
                    && w.callee.dialog.is_none()),
                "{ctx}"
            );
            assert_eq!(w.caller.invite_finals.last(), Some(&487), "{ctx}");
            assert_eq!(
                w.callee.byes_received,
                callee_byes + 1,
                "{ctx}: leg B hung up"
            );
        }
        End::Busy | End::NoAnswer => {
            assert!(w.run_until(MAX, |w| w.caller.invite.is_none()), "{ctx}");
            let want = if end == End::Busy { 486 } else { 408 };
            assert_eq!(w.caller.invite_finals.last(), Some(&want), "{ctx}");
        }
        End::NeverAcked => {
            // tapir gives up on the ACK after 64*T1 and hangs up both legs.
            assert!(
                w.run_until(MAX, |w| w.caller.byes_received > byes_before
                    && w.callee.dialog.is_none()),
                "{ctx}"
            );
        }
    }
    assert!(
        w.run_until(MAX, |w| w.outcomes().len() > ended_before),
        "{ctx}: never ended"
    );
    w.net.links.clear();

    assert_eq!(
        w.opened().len(),
        1,
        "{ctx}: media refused (a leaked port pair?)"
    );
    assert_eq!(w.outcomes(), vec![expected(end)], "{ctx}");
    assert_eq!(w.closes(), 1, "{ctx}");
    assert_eq!(
        w.tapir.free_ports(),
        w.initial_free_ports,
        "{ctx}: ports not back in the pool when the call ended"
    );
    w.media.clear();
    w.events.clear();
    w.caller.finals.clear();
    w.callee.finals.clear();
}

#[test]
fn ten_thousand_calls_ending_every_way_leak_no_port() {
    let mut w = World::new(Setup {
        // Even ports 40000 and 40002: exactly one pair.
        rtp_ports: (40000, 40003),
        trace: false,
        ..Setup::default()
    });
    assert_eq!(w.initial_free_ports, 2);
    for i in 0..CALLS {
        one_call(&mut w, i, ENDS[i % ENDS.len()]);
    }
    w.assert_clean();
    assert_eq!(
        w.caller.timeouts() + w.callee.timeouts(),
        0,
        "every request answered, every 2xx acknowledged"
    );
    assert_eq!(w.tapir.free_ports(), 2);
    assert_eq!(w.tapir.active_calls(), 0);
    assert_eq!(w.tapir.stats().parse_errors, 0);
}
