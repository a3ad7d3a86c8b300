//! The ways a call can go besides a plain answer-and-hang-up, each driven through the B2BUA
//! core on the virtual network: cancellation (also crossing a 2xx), rejection, no answer,
//! re-INVITE hold/resume and glare, in-dialog requests, delayed offer, and the requests tapir
//! must refuse itself.

mod common;

use std::time::Duration;

use b2bua::{Leg, Outcome};
use common::*;
use sdp::Direction;
use sip::transaction::Peer;
use sip::{HeaderAccess, Method, Transport};

fn media(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::new(MEDIA_IP.parse().unwrap(), port)
}

fn ringing(w: &World) -> bool {
    w.caller.statuses(Method::Invite).contains(&180)
}

#[test]
fn cancel_before_answer() {
    let mut w = World::new(Setup::default());
    w.callee.answer = Answer::RingForever;
    w.caller.invite(w.now, "1000", true);
    assert!(w.run_until(Duration::from_secs(5), ringing));
    w.caller.cancel(w.now);
    w.run_for(Duration::from_secs(1));

    assert_eq!(w.caller.statuses(Method::Cancel), vec![200]);
    assert_eq!(w.caller.invite_finals, vec![487]);
    let b_inv = w.callee.requests(Method::Invite)[0].clone();
    let cancels = w.net.requests(TAPIR, CALLEE, Method::Cancel);
    assert_eq!(cancels.len(), 1, "CANCEL relayed on leg B");
    assert_eq!(cancels[0].1.call_id(), b_inv.call_id());
    assert_eq!(
        cancels[0].1.top_via().unwrap().branch(),
        b_inv.top_via().unwrap().branch(),
        "a CANCEL carries its INVITE's branch"
    );
    assert!(w.callee.seen.iter().any(|s| matches!(s, Seen::Cancelled)));
    // The callee's 487 was acknowledged hop by hop by tapir.
    assert!(w
        .net
        .requests(TAPIR, CALLEE, Method::Ack)
        .iter()
        .all(|(_, a)| a.top_via().unwrap().branch() == b_inv.top_via().unwrap().branch()));
    assert_eq!(w.net.requests(TAPIR, CALLEE, Method::Ack).len(), 1);
    assert_eq!(w.answered(), 0);
    assert_eq!(w.outcomes(), vec![Outcome::Cancelled]);
    assert_eq!(w.closes(), 1);
    w.assert_clean();
}

#[test]
fn cancel_crossing_the_callees_200_is_acked_and_hung_up_on_leg_b() {
    let mut w = World::new(Setup::default());
    // The callee's 200 takes 50 ms to reach tapir; the caller's CANCEL, sent the moment the
    // callee answers, takes 10 ms: tapir has cancelled before the 200 arrives.
    w.net.set_link(CALLEE, TAPIR, Link::fixed(50));
    w.callee.answer = Answer::Accept {
        ring: Duration::from_secs(2),
    };
    w.caller.invite(w.now, "1000", true);
    assert!(w.run_until(Duration::from_secs(5), |w| w.callee.confirmed));
    w.caller.cancel(w.now);
    w.run_for(Duration::from_secs(2));

    assert_eq!(w.caller.invite_finals, vec![487]);
    assert!(!w.caller.confirmed);
    // Leg B: the CANCEL came too late for the callee (200 OK to it, no 487), so tapir ACKs
    // the 200 and hangs up.
    assert_eq!(w.net.requests(TAPIR, CALLEE, Method::Cancel).len(), 1);
    assert_eq!(w.callee.statuses(Method::Invite), Vec::<u16>::new());
    assert_eq!(w.callee.acks().len(), 1);
    assert_eq!(w.callee.byes_received, 1);
    assert!(w.callee.dialog.is_none());
    assert_eq!(w.answered(), 0, "the caller never had an answered call");
    assert_eq!(w.outcomes(), vec![Outcome::Cancelled]);
    w.assert_clean();
    assert_eq!(w.callee.timeouts(), 0, "the callee's 200 was acknowledged");
}

#[test]
fn busy_is_relayed_and_its_ack_absorbed_hop_by_hop() {
    let mut w = World::new(Setup::default());
    w.callee.answer = Answer::Reject {
        ring: Duration::from_millis(500),
        status: 486,
    };
    let invite = w.caller.invite(w.now, "1000", true);
    w.run_for(Duration::from_secs(2));

    assert_eq!(w.caller.invite_finals, vec![486]);
    // Each leg's ACK for the 486 stays on its own leg.
    let b_inv = w.callee.requests(Method::Invite)[0].clone();
    let b_acks = w.net.requests(TAPIR, CALLEE, Method::Ack);
    assert_eq!(b_acks.len(), 1);
    assert_eq!(b_acks[0].1.call_id(), b_inv.call_id());
    assert_eq!(
        b_acks[0].1.top_via().unwrap().branch(),
        b_inv.top_via().unwrap().branch()
    );
    let a_acks = w.net.requests(CALLER, TAPIR, Method::Ack);
    assert_eq!(a_acks.len(), 1);
    assert_eq!(a_acks[0].1.call_id(), invite.call_id());
    assert_eq!(
        w.callee.acks().len(),
        0,
        "a non-2xx ACK is absorbed by the callee's transaction, not seen as a dialog ACK"
    );
    // No retransmission of the 486 once ACKed.
    assert_eq!(
        w.net
            .responses(TAPIR, CALLER)
            .iter()
            .filter(|r| r.status == 486)
            .count(),
        1
    );
    assert_eq!(w.outcomes(), vec![Outcome::Rejected(486)]);
    assert_eq!(w.answered(), 0);
    w.assert_clean();
}

#[test]
fn no_answer_times_out_with_408_after_64_t1() {
    let mut w = World::new(Setup::default());
    w.net.set_link(TAPIR, CALLEE, Link::DEAD);
    w.caller.invite(w.now, "1000", true);
    let t0 = w.now;
    assert!(w.run_until(Duration::from_secs(60), |w| !w
        .caller
        .invite_finals
        .is_empty()));
    assert_eq!(w.caller.invite_finals, vec![408]);
    // Timer A: 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; Timer B at 32 s.
    let sent: Vec<Duration> = w
        .net
        .requests(TAPIR, CALLEE, Method::Invite)
        .iter()
        .map(|(at, _)| *at - t0)
        .collect();
    let ms = |v: u64| Duration::from_millis(v);
    let leg_a_delay = ms(10);
    assert_eq!(
        sent,
        [0, 500, 1500, 3500, 7500, 15500, 31500]
            .iter()
            .map(|&v| ms(v) + leg_a_delay)
            .collect::<Vec<_>>()
    );
    assert_eq!(w.elapsed(), ms(32_000) + leg_a_delay * 2);
    assert_eq!(w.outcomes(), vec![Outcome::Timeout]);
    assert_eq!(w.tapir.free_ports(), w.initial_free_ports);
    w.assert_clean();
}

/// A target over TCP (or TLS) whose connection cannot be opened: as soon as the binary
/// reports it, the caller gets 503 and the call ends as unreachable, with its media ports
/// back, instead of 408 after Timer B. A report before any call, or for another peer, does
/// nothing.
#[test]
fn an_unreachable_connection_target_answers_503_at_once() {
    let mut w = World::new(Setup {
        routes: vec![route("trunk", &format!("sip:{CALLEE};transport=tcp"))],
        ..Setup::default()
    });
    let tcp = Peer {
        addr: addr(CALLEE),
        transport: Transport::Tcp,
    };
    w.tapir.transport_error(w.now, tcp);
    w.net.set_link(TAPIR, CALLEE, Link::DEAD);
    w.caller.invite(w.now, "1000", true);
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.net.requests(TAPIR, CALLEE, Method::Invite).len(), 1);
    assert!(w.caller.invite_finals.is_empty());
    // Over the same address on UDP: not the connection that failed.
    let now = w.now;
    w.tapir.transport_error(
        now,
        Peer {
            addr: addr(CALLEE),
            transport: Transport::Udp,
        },
    );
    w.run_for(Duration::from_millis(100));
    assert!(w.caller.invite_finals.is_empty());
    let now = w.now;
    w.tapir.transport_error(now, tcp);
    assert!(w.run_until(Duration::from_secs(1), |w| !w
        .caller
        .invite_finals
        .is_empty()));
    assert_eq!(w.caller.invite_finals, vec![503]);
    assert!(w.elapsed() < Duration::from_secs(1));
    assert_eq!(w.outcomes(), vec![Outcome::Unreachable]);
    assert_eq!(w.tapir.free_ports(), w.initial_free_ports);
    w.assert_clean();
}

/// A callee reached over TCP whose connection is gone when the caller re-INVITEs: the
/// caller gets 503 for it and, since a request that got no response ends the dialog
/// (§12.2.1.2) and a 503 would not, tapir ends the call with a BYE to the caller.
#[test]
fn a_relayed_request_to_an_unreachable_party_ends_the_call() {
    let mut w = World::new(Setup {
        routes: vec![route("trunk", &format!("sip:{CALLEE};transport=tcp"))],
        ..Setup::default()
    });
    w.callee.contact_params = ";transport=tcp";
    w.call();
    w.net.set_link(TAPIR, CALLEE, Link::DEAD);
    let now = w.now;
    w.caller.reinvite(now, sdp::Direction::SendOnly);
    w.run_for(Duration::from_millis(100));
    let relayed = w.net.requests(TAPIR, CALLEE, Method::Invite).len();
    assert_eq!(relayed, 2, "the INVITE and the re-INVITE");
    let now = w.now;
    w.tapir.transport_error(
        now,
        Peer {
            addr: addr(CALLEE),
            transport: Transport::Tcp,
        },
    );
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.statuses(Method::Invite).last(), Some(&503));
    assert_eq!(w.caller.byes_received, 1);
    w.run_for(Duration::from_secs(40));
    assert_eq!(w.outcomes(), vec![Outcome::Completed]);
    assert_eq!(w.tapir.free_ports(), w.initial_free_ports);
}

#[test]
fn ringing_forever_ends_at_timer_c_with_408_and_a_cancel() {
    let mut w = World::new(Setup::default());
    w.callee.answer = Answer::RingForever;
    // The caller is patient; tapir's Timer C decides.
    w.caller.tx.set_timer_c(Duration::from_secs(600));
    w.caller.invite(w.now, "1000", true);
    assert!(w.run_until(Duration::from_secs(300), |w| !w
        .caller
        .invite_finals
        .is_empty()));
    assert_eq!(w.caller.invite_finals, vec![408]);
    assert!(w.elapsed() >= sip::transaction::TIMER_C);
    assert!(w.elapsed() < sip::transaction::TIMER_C + Duration::from_secs(1));
    assert_eq!(w.net.requests(TAPIR, CALLEE, Method::Cancel).len(), 1);
    w.run_for(Duration::from_secs(1));
    assert!(
        w.callee.dialog.is_none(),
        "the callee answered the CANCEL with 487"
    );
    assert_eq!(w.outcomes(), vec![Outcome::Timeout]);
    w.assert_clean();
}

/// Runs a hold/resume cycle started by `from_caller` side and checks SDP and media commands.
fn hold_and_resume(from_caller: bool, hold: Direction) {
    let mut w = World::new(Setup::default());
    let (a_port, b_port) = w.call();
    w.run_for(Duration::from_secs(2));
    let n_updates = w.media.len();

    let (holder_leg, other_leg, holder_rtp, other_rtp) = if from_caller {
        (Leg::A, Leg::B, addr(CALLER_RTP), addr(CALLEE_RTP))
    } else {
        (Leg::B, Leg::A, addr(CALLEE_RTP), addr(CALLER_RTP))
    };
    let (holder_port, other_port) = if from_caller {
        (a_port, b_port)
    } else {
        (b_port, a_port)
    };
    let now = w.now;
    if from_caller {
        w.caller.reinvite(now, hold);
    } else {
        w.callee.reinvite(now, hold);
    }
    w.run_for(Duration::from_secs(1));
    let (holder, other) = if from_caller {
        (&w.caller, &w.callee)
    } else {
        (&w.callee, &w.caller)
    };
    // The other party got the re-INVITE in its own dialog, anchored on its leg's port.
    let re = other
        .requests(Method::Invite)
        .into_iter()
        .find(|r| r.to_tag().is_some())
        .expect("re-INVITE relayed")
        .clone();
    assert_eq!(re.call_id(), other.dialog.as_ref().unwrap().call_id);
    assert_eq!(sdp_summary(&re.body), (media(other_port), hold));
    // The holder got 200 with the answer anchored on its own leg's port.
    let ok = holder
        .responses(Method::Invite)
        .last()
        .copied()
        .unwrap()
        .clone();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.cseq().unwrap().seq, if from_caller { 2 } else { 1 });
    assert_eq!(
        sdp_summary(&ok.body),
        (media(holder_port), answer_direction(hold))
    );
    // The answerer's 200 was ACKed by tapir on its leg; the holder's ACK stayed on its own.
    assert_eq!(other.acks().len(), if from_caller { 2 } else { 1 });
    // Media: both parties' directions followed.
    let after: Vec<_> = w.media[n_updates..].to_vec();
    assert!(after.contains(&b2bua::MediaCommand::Update {
        call: 1,
        leg: holder_leg,
        remote: Some(holder_rtp),
        sends: hold.sends(),
        codecs: after
            .iter()
            .find_map(|m| match m {
                b2bua::MediaCommand::Update { codecs, .. } => Some(codecs.clone()),
                _ => None,
            })
            .unwrap(),
    }));
    assert_eq!(
        w.updates(other_leg).last().copied(),
        Some((Some(other_rtp), answer_direction(hold).sends()))
    );
    assert_eq!(
        w.updates(holder_leg).last().copied(),
        Some((Some(holder_rtp), hold.sends()))
    );

    // Resume.
    let now = w.now;
    if from_caller {
        w.caller.reinvite(now, Direction::SendRecv);
    } else {
        w.callee.reinvite(now, Direction::SendRecv);
    }
    w.run_for(Duration::from_secs(1));
    assert_eq!(
        w.updates(other_leg).last().copied(),
        Some((Some(other_rtp), true))
    );
    assert_eq!(
        w.updates(holder_leg).last().copied(),
        Some((Some(holder_rtp), true))
    );
    let holder = if from_caller { &w.caller } else { &w.callee };
    let ok = holder.responses(Method::Invite).last().copied().unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(
        sdp_summary(&ok.body),
        (media(holder_port), Direction::SendRecv)
    );
    assert_eq!(w.tapir.active_calls(), 1);

    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.outcomes(), vec![Outcome::Completed]);
    w.assert_clean();
}

#[test]
fn hold_and_resume_from_the_caller_with_sendonly() {
    hold_and_resume(true, Direction::SendOnly);
}

#[test]
fn hold_and_resume_from_the_callee_with_sendonly() {
    hold_and_resume(false, Direction::SendOnly);
}

#[test]
fn hold_and_resume_from_the_callee_with_inactive() {
    hold_and_resume(false, Direction::Inactive);
}

#[test]
fn reinvite_glare_gets_491() {
    let mut w = World::new(Setup::default());
    w.call();
    w.run_for(Duration::from_secs(1));
    let now = w.now;
    w.caller.reinvite(now, Direction::SendOnly);
    w.callee.reinvite(now, Direction::SendOnly);
    w.run_for(Duration::from_secs(2));
    // Each side's re-INVITE met the other one: both are refused with 491.
    assert_eq!(w.caller.statuses(Method::Invite).last(), Some(&491));
    assert_eq!(w.callee.statuses(Method::Invite).last(), Some(&491));
    assert_eq!(w.tapir.active_calls(), 1, "glare does not end the call");
    // A later re-INVITE goes through.
    w.caller.reinvite(w.now, Direction::SendRecv);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.statuses(Method::Invite).last(), Some(&200));
    w.callee.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.outcomes(), vec![Outcome::Completed]);
    w.assert_clean();
}

#[test]
fn info_and_options_in_dialog_are_relayed_end_to_end() {
    let mut w = World::new(Setup::default());
    w.call();
    let dtmf = b"Signal=5\r\nDuration=160\r\n".to_vec();
    w.caller.request(
        w.now,
        Method::Info,
        Some(("application/dtmf-relay", dtmf.clone())),
    );
    w.run_for(Duration::from_secs(1));
    let infos = w.callee.requests(Method::Info);
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].body, dtmf);
    assert_eq!(infos[0].content_type(), Some("application/dtmf-relay"));
    assert_eq!(
        infos[0].call_id(),
        w.callee.dialog.as_ref().unwrap().call_id,
        "in the leg-B dialog"
    );
    assert_eq!(w.caller.statuses(Method::Info), vec![200]);
    assert!(w.events.iter().any(|e| matches!(
        e,
        b2bua::CallEvent::InDialog { leg: Leg::A, method, body, .. } if method == "INFO" && *body == dtmf
    )));

    w.callee.request(w.now, Method::Options, None);
    w.run_for(Duration::from_secs(1));
    let opts = w.caller.requests(Method::Options);
    assert_eq!(opts.len(), 1);
    assert_eq!(opts[0].call_id(), w.caller.dialog.as_ref().unwrap().call_id);
    assert_eq!(w.callee.statuses(Method::Options), vec![200]);

    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    w.assert_clean();
}

#[test]
fn a_dtmf_info_that_is_no_digit_is_refused_and_not_relayed() {
    let mut w = World::new(Setup::default());
    w.call();
    w.caller.request(
        w.now,
        Method::Info,
        Some(("application/dtmf-relay", b"Signal=hello\r\n".to_vec())),
    );
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.statuses(Method::Info), vec![400]);
    assert!(w.callee.requests(Method::Info).is_empty());
    assert!(!w
        .events
        .iter()
        .any(|e| matches!(e, b2bua::CallEvent::InDialog { .. })));
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    w.assert_clean();
}

#[test]
fn requests_in_flight_when_the_call_ends_are_answered() {
    let mut w = World::new(Setup::default());
    w.call();
    // The callee takes 2 s to answer the INFO; the caller hangs up meanwhile.
    w.callee.in_dialog_delay = Duration::from_secs(2);
    w.caller
        .request(w.now, Method::Info, Some(("text/plain", b"x".to_vec())));
    w.run_for(Duration::from_millis(100));
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(5));
    assert_eq!(w.outcomes(), vec![Outcome::Completed]);
    let info = w.caller.statuses(Method::Info);
    assert_eq!(info.len(), 1, "the INFO got a final answer: {info:?}");
    assert!(info[0] >= 200);
    assert_eq!(w.caller.timeouts(), 0);
    w.assert_clean();
}

#[test]
fn reinvite_in_flight_when_the_call_ends_is_answered() {
    let mut w = World::new(Setup::default());
    w.call();
    // The callee takes 2 s to answer the re-INVITE; the caller hangs up meanwhile.
    w.callee.in_dialog_delay = Duration::from_secs(2);
    w.caller.reinvite(w.now, Direction::SendOnly);
    w.run_for(Duration::from_millis(100));
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(5));
    assert_eq!(w.outcomes(), vec![Outcome::Completed]);
    let finals: Vec<u16> = w
        .caller
        .statuses(Method::Invite)
        .into_iter()
        .filter(|s| *s >= 200)
        .collect();
    assert_eq!(
        finals.len(),
        2,
        "initial and re-INVITE both answered: {finals:?}"
    );
    w.assert_clean();
    assert_eq!(
        w.callee.timeouts(),
        0,
        "the callee's late 200 was acknowledged"
    );
}

#[test]
fn delayed_offer_answer_travels_in_the_acks() {
    let mut w = World::new(Setup::default());
    w.caller.invite(w.now, "1000", false);
    let (a_port, b_port) = w.establish();
    let b_inv = w.callee.requests(Method::Invite)[0].clone();
    assert!(b_inv.body.is_empty(), "no offer on leg B either");
    // The callee's offer reaches the caller anchored on leg A's port.
    let ok = w
        .caller
        .responses(Method::Invite)
        .last()
        .copied()
        .unwrap()
        .clone();
    assert_eq!(sdp_summary(&ok.body).0, media(a_port));
    // The caller's answer, in its ACK, reaches the callee in tapir's ACK, anchored on leg B.
    let acks = w.callee.acks();
    assert_eq!(acks.len(), 1);
    assert!(acks[0].has_sdp(), "leg B's ACK carries the answer");
    assert_eq!(sdp_summary(&acks[0].body).0, media(b_port));
    assert_eq!(
        w.updates(Leg::A).last().copied(),
        Some((Some(addr(CALLER_RTP)), true))
    );
    assert_eq!(
        w.updates(Leg::B).last().copied(),
        Some((Some(addr(CALLEE_RTP)), true))
    );
    w.callee.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.outcomes(), vec![Outcome::Completed]);
    w.assert_clean();
}

#[test]
fn bye_in_the_early_dialog_cancels_leg_b() {
    let mut w = World::new(Setup::default());
    w.callee.answer = Answer::RingForever;
    w.caller.invite(w.now, "1000", true);
    assert!(w.run_until(Duration::from_secs(5), ringing));
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.statuses(Method::Bye), vec![200]);
    assert_eq!(w.caller.invite_finals, vec![487]);
    assert_eq!(w.net.requests(TAPIR, CALLEE, Method::Cancel).len(), 1);
    assert!(w.callee.dialog.is_none());
    assert_eq!(w.outcomes(), vec![Outcome::Cancelled]);
    w.assert_clean();
}

/// Sends a caller INVITE changed by `tweak` and returns tapir's final status to it.
fn refused(setup: Setup, user: &str, tweak: impl FnOnce(&mut sip::Request)) -> (World, u16) {
    let mut w = World::new(setup);
    w.caller.invite_with(w.now, user, true, tweak);
    w.run_for(Duration::from_secs(2));
    assert_eq!(w.caller.invite_finals.len(), 1);
    let status = w.caller.invite_finals[0];
    assert!(
        w.net.messages(TAPIR, CALLEE).is_empty(),
        "nothing reached the callee"
    );
    assert_eq!(w.started(), 0);
    assert!(w.media.is_empty());
    (w, status)
}

#[test]
fn max_forwards_zero_gets_483() {
    let (mut w, s) = refused(Setup::default(), "1000", |r| {
        r.headers.set("Max-Forwards", "0")
    });
    assert_eq!(s, 483);
    w.assert_clean();
}

#[test]
fn a_request_carrying_tapirs_own_branch_gets_482() {
    let (mut w, s) = refused(Setup::default(), "1000", |r| {
        r.headers.set(
            "Via",
            "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-tpr0123456789abcdef;rport",
        )
    });
    assert_eq!(s, 482);
    w.assert_clean();
}

#[test]
fn no_route_gets_404() {
    let mut setup = Setup::default();
    setup.routes[0].user_prefix = Some("9".into());
    let (mut w, s) = refused(setup, "1000", |_| {});
    assert_eq!(s, 404);
    w.assert_clean();
}

#[test]
fn a_body_that_is_not_sdp_gets_415() {
    let (mut w, s) = refused(Setup::default(), "1000", |r| {
        r.headers.set("Content-Type", "text/plain");
        r.body = b"hello".to_vec();
    });
    assert_eq!(s, 415);
    w.assert_clean();
}

#[test]
fn bye_for_an_unknown_dialog_gets_481() {
    let mut w = World::new(Setup::default());
    w.call();
    // A BYE with a To tag tapir never gave out.
    let mut bye = w.caller.dialog.clone().unwrap();
    bye.local_tag = "stranger".into();
    bye.remote_tag = Some("unknown".into());
    let mut r = bye.request(Method::Bye);
    r.headers.push_front(
        "Via",
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKstray1;rport",
    );
    w.inject(CALLER, TAPIR, &r.to_bytes());
    w.run_for(Duration::from_secs(1));
    let resp = w
        .net
        .responses(TAPIR, CALLER)
        .into_iter()
        .find(|r| r.cseq().unwrap().method == Method::Bye)
        .unwrap();
    assert_eq!(resp.status, 481);
    assert_eq!(w.tapir.stats().stray_requests, 1);
    assert_eq!(w.tapir.active_calls(), 1, "the real call is untouched");
    assert!(w.net.requests(TAPIR, CALLEE, Method::Bye).is_empty());
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    w.assert_clean();
}

#[test]
fn garbage_is_counted_and_dropped() {
    let mut w = World::new(Setup::default());
    for junk in [
        &b"\x00\x01\x02garbage"[..],
        b"",
        b"HELLO WORLD\r\n\r\n",
        b"SIP/2.0 999 Nope\r\n\r\n",
        &[0xff; 300],
    ] {
        w.inject(CALLER, TAPIR, junk);
    }
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.tapir.stats().parse_errors, 5);
    assert_eq!(w.tapir.stats().bad_requests_answered, 0);
    assert!(w.net.messages(TAPIR, CALLER).is_empty(), "nothing answered");
    assert!(w.net.messages(TAPIR, CALLEE).is_empty());
    w.assert_clean();
}

#[test]
fn crlf_keepalives_over_udp_are_neither_answered_nor_parse_errors() {
    let mut w = World::new(Setup::default());
    for ka in [&b"\r\n\r\n"[..], b"\r\n", b"\r\n\r\n\r\n\r\n"] {
        w.inject(CALLER, TAPIR, ka);
    }
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.tapir.stats().keepalives, 3);
    assert_eq!(w.tapir.stats().parse_errors, 0);
    assert_eq!(w.tapir.stats().messages_in, 0);
    // Nothing answered, not even a CRLF: the network carried the three keep-alives only.
    assert_eq!(w.net.sent, 3);
    w.assert_clean();
}

#[test]
fn a_malformed_but_answerable_request_gets_400_with_a_reason() {
    let mut w = World::new(Setup::default());
    let bad = "INVITE sip:1000@192.0.2.1 SIP/2.0\r\n\
               Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbad1;rport\r\n\
               Max-Forwards: 70\r\n\
               From: <sip:alice@192.0.2.10>;tag=a1\r\n\
               To: <sip:1000@192.0.2.1>\r\n\
               Call-ID: bad-1\r\n\
               CSeq: 1 BYE\r\n\
               Content-Length: 0\r\n\r\n";
    w.inject(CALLER, TAPIR, bad.as_bytes());
    w.run_for(Duration::from_secs(1));
    let r = w.net.responses(TAPIR, CALLER);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, 400);
    assert!(r[0].reason.contains("CSeq"), "{}", r[0].reason);
    assert_eq!(r[0].call_id(), "bad-1");
    assert_eq!(w.tapir.stats().parse_errors, 1);
    assert_eq!(w.tapir.stats().bad_requests_answered, 1);
    assert_eq!(w.started(), 0);
    w.assert_clean();
}

#[test]
fn a_retransmitted_invite_never_becomes_a_second_call() {
    let mut w = World::new(Setup::default());
    // The caller's link duplicates everything: tapir sees each INVITE twice, 1-150 ms apart.
    w.net.set_link(
        CALLER,
        TAPIR,
        Link {
            dup_percent: 100,
            ..Link::lossy(0, 100)
        },
    );
    let invite = w.caller.invite(w.now, "1000", true);
    w.establish();
    // Long after the call was set up, the INVITE arrives once more (a very late copy).
    w.run_for(Duration::from_secs(2));
    w.inject(CALLER, TAPIR, &invite.to_bytes());
    w.run_for(Duration::from_secs(1));
    assert!(
        w.net.duplicated >= 2,
        "the INVITE and the ACK were duplicated"
    );
    assert!(w.tapir.tx_stats().retransmissions_absorbed >= 2);
    assert_eq!(w.started(), 1);
    assert_eq!(w.opened().len(), 1);
    assert_eq!(w.net.requests(TAPIR, CALLEE, Method::Invite).len(), 1);
    assert_eq!(w.caller.invite_finals, vec![200]);
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.outcomes(), vec![Outcome::Completed]);
    w.assert_clean();
}

#[test]
fn callee_bye_on_its_early_dialog_answers_the_caller_and_cancels_leg_b() {
    let mut w = World::new(Setup::default());
    w.callee.answer = Answer::RingForever;
    w.caller.invite(w.now, "1000", true);
    assert!(w.run_until(Duration::from_secs(5), ringing));
    // RFC 3261 §15 forbids it, but a broken or hostile callee can send it.
    w.callee.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.callee.last_final(Method::Bye), Some(200));
    assert_eq!(
        w.caller.byes_received, 0,
        "BYE sent on the caller's early dialog"
    );
    assert_eq!(w.caller.invite_finals, vec![480]);
    assert!(w.callee.seen.iter().any(|s| matches!(s, Seen::Cancelled)));
    assert_eq!(w.outcomes(), vec![Outcome::Rejected(480)]);
    assert_eq!(w.tapir.active_calls(), 0, "call left behind");
    w.assert_clean();
}

#[test]
fn forged_2xx_for_a_dialog_tapir_never_had_is_not_answered() {
    const SPOOFED: &str = "198.51.100.66:5060";
    let mut w = World::new(Setup::default());
    // A 200 anyone can write: tapir's branch prefix is public. Acknowledging it and hanging
    // up would send an ACK and a BYE, retransmitted for 32 s, to whatever source it claims.
    let forged = format!(
        "SIP/2.0 200 OK\r\n\
         Via: SIP/2.0/UDP {TAPIR};branch=z9hG4bK-tpr0123456789abcdef;rport\r\n\
         From: <sip:a@{TAPIR}>;tag=forged-from\r\n\
         To: <sip:b@198.51.100.66>;tag=forged-to\r\n\
         Call-ID: forged@198.51.100.66\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:b@198.51.100.66>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    w.inject(SPOOFED, TAPIR, forged.as_bytes());
    w.run_for(Duration::from_secs(40));
    assert!(
        w.net.messages(TAPIR, SPOOFED).is_empty(),
        "tapir answered a forged 2xx"
    );
    assert_eq!(w.tapir.transactions(), 0);
    // A call tapir did have still gets its late 2xx acknowledged (see the leak test); this
    // one, after a real call, still is not.
    w.call();
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    w.inject(SPOOFED, TAPIR, forged.as_bytes());
    w.run_for(Duration::from_secs(40));
    assert!(w.net.messages(TAPIR, SPOOFED).is_empty());
    w.assert_clean();
}

#[test]
fn absurd_session_expires_is_bounded_not_a_panic() {
    let mut w = World::new(Setup::default());
    // Parses as a u64 number of seconds, but no Instant can be that far away.
    w.caller.invite_with(w.now, "1000", true, |r| {
        r.headers.push("Supported", "timer");
        r.headers
            .push("Session-Expires", "18446744073709551615;refresher=uac");
    });
    w.establish();
    let (interval, _) = w
        .tapir
        .session_timer(w.opened()[0].0, Leg::A)
        .expect("tapir answered for the callee with a timer");
    assert!(interval <= Duration::from_secs(86_400), "{interval:?}");
    w.run_for(Duration::from_secs(5));
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(5));
    assert_eq!(w.caller.last_final(Method::Bye), Some(200));
    assert_eq!(w.tapir.active_calls(), 0);
}

#[test]
fn an_ended_call_leaves_no_session_timer_wake_up_behind() {
    let mut w = World::new(Setup::default());
    w.caller.invite_with(w.now, "1000", true, |r| {
        r.headers.push("Supported", "timer");
        r.headers.push("Session-Expires", "1800;refresher=uac");
    });
    w.establish();
    assert!(w.tapir.session_timer(w.opened()[0].0, Leg::A).is_some());
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(40));
    assert_eq!(w.tapir.active_calls(), 0);
    // The call's session deadline (half an hour away) must not keep the core asking to be
    // woken up for a call that is gone.
    assert_eq!(w.tapir.poll_timeout(), None);
    w.assert_clean();
}

#[test]
fn bye_after_cancel_neither_hangs_up_the_ringing_callee_nor_leaks_the_call() {
    let mut w = World::new(Setup::default());
    w.callee.answer = Answer::RingForever;
    w.caller.invite(w.now, "1000", true);
    assert!(w.run_until(Duration::from_secs(5), ringing));
    // A confused caller cancels and hangs up its early dialog at once.
    w.caller.cancel(w.now);
    w.run_for(Duration::from_millis(1));
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.invite_finals, vec![487]);
    assert_eq!(w.caller.last_final(Method::Bye), Some(200));
    assert!(
        w.net.requests(TAPIR, CALLEE, Method::Bye).is_empty(),
        "BYE sent on the callee's early dialog"
    );
    assert_eq!(w.outcomes(), vec![Outcome::Cancelled]);
    assert_eq!(w.tapir.active_calls(), 0, "call left behind");
    w.assert_clean();
}
