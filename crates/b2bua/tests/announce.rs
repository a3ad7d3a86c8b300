//! Calls that end while a recording announcement plays. The relay stops a prompt when the
//! call's media closes and then never reports it done, so every way out of an announced call
//! must leave nothing behind by itself: no call, no transaction, no unanswered INVITE, and no
//! leg B called after the caller has gone.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use b2bua::announce::AnnounceConfig;
use b2bua::{Leg, MediaCommand, Side};
use common::*;
use sip::Method;

fn announced(customer: Side) -> World {
    let mut r = route("trunk", &format!("sip:{CALLEE}"));
    r.customer = customer;
    let mut w = World::new(Setup {
        routes: vec![r],
        ..Setup::default()
    });
    w.tapir.set_announcements(HashMap::from([(
        "trunk".to_string(),
        AnnounceConfig {
            prompt: "consent.wav".into(),
            collect_consent: false,
            skip_call_types: Vec::new(),
        },
    )]));
    w
}

/// Runs until tapir asks for the prompt on `leg`; returns the call.
fn until_prompt(w: &mut World, leg: Leg) -> u64 {
    let ok = w.run_until(Duration::from_secs(10), |w| {
        w.media
            .iter()
            .any(|m| matches!(m, MediaCommand::Announce { leg: l, .. } if *l == leg))
    });
    assert!(ok, "no announcement on {leg:?}");
    // Let the 183/180 reach the caller, so it has an early dialog.
    w.run_for(Duration::from_millis(50));
    w.opened()[0].0
}

fn early_dialog(w: &World) -> bool {
    w.caller
        .dialog
        .as_ref()
        .is_some_and(|d| d.remote_tag.is_some())
}

#[test]
fn the_announcements_183_carries_the_invites_record_route() {
    // tapir's own 183 makes the caller's early dialog: a record-routing proxy in front of
    // tapir stays on its path (RFC 3261 §12.1.1), so a BYE during the prompt reaches this node.
    let mut w = announced(Side::Caller);
    let rr = "<sip:192.0.2.50;lr=on>";
    w.caller
        .invite_with(w.now, "1000", true, |r| r.headers.push("Record-Route", rr));
    until_prompt(&mut w, Leg::A);
    let early: Vec<_> = w
        .caller
        .responses(Method::Invite)
        .into_iter()
        .filter(|r| r.status == 183)
        .collect();
    assert!(!early.is_empty(), "no 183");
    for r in early {
        assert_eq!(r.headers.get_all("Record-Route").collect::<Vec<_>>(), [rr]);
    }
}

#[test]
fn caller_bye_during_inbound_prompt_ends_the_call_and_never_calls_leg_b() {
    let mut w = announced(Side::Caller);
    w.caller.invite(w.now, "1000", true);
    let call = until_prompt(&mut w, Leg::A);
    assert!(early_dialog(&w), "the 183 gave the caller an early dialog");
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.last_final(Method::Bye), Some(200));
    assert_eq!(w.caller.invite_finals, vec![487]);
    assert_eq!(w.closes(), 1);
    assert_eq!(w.tapir.active_calls(), 0, "call left behind");
    // A prompt end reported late (it raced the BYE) must not call the agent.
    w.tapir.announcement_done(w.now, call);
    w.run_for(Duration::from_secs(1));
    assert!(
        w.net.requests(TAPIR, CALLEE, Method::Invite).is_empty(),
        "leg B called after the caller hung up"
    );
    w.assert_clean();
}

#[test]
fn hang_up_during_inbound_prompt_ends_the_call_and_never_calls_leg_b() {
    let mut w = announced(Side::Caller);
    w.caller.invite(w.now, "1000", true);
    let call = until_prompt(&mut w, Leg::A);
    w.tapir.hang_up(w.now, call);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.invite_finals, vec![503]);
    assert_eq!(w.tapir.active_calls(), 0, "call left behind");
    w.tapir.announcement_done(w.now, call);
    w.run_for(Duration::from_secs(1));
    assert!(w.net.requests(TAPIR, CALLEE, Method::Invite).is_empty());
    w.assert_clean();
}

#[test]
fn callee_bye_during_outbound_prompt_answers_the_agents_invite() {
    let mut w = announced(Side::Callee);
    w.caller.invite(w.now, "1000", true);
    let call = until_prompt(&mut w, Leg::B);
    w.callee.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.callee.last_final(Method::Bye), Some(200));
    // The agent never got a 2xx: its INVITE is answered with an error, not hung up with BYE
    // on a dialog that was never confirmed.
    assert_eq!(
        w.caller.byes_received, 0,
        "BYE sent on an unanswered dialog"
    );
    assert_eq!(w.caller.invite_finals.len(), 1);
    assert!(
        w.caller.invite_finals[0] >= 400,
        "{:?}",
        w.caller.invite_finals
    );
    assert_eq!(w.tapir.active_calls(), 0, "call left behind");
    w.tapir.announcement_done(w.now, call);
    w.run_for(Duration::from_secs(1));
    assert!(
        !w.caller.invite_finals.contains(&200),
        "200 relayed for an ended call"
    );
    w.assert_clean();
}

#[test]
fn agent_bye_on_its_early_dialog_during_outbound_prompt_hangs_up_the_callee() {
    let mut w = announced(Side::Callee);
    w.caller.invite(w.now, "1000", true);
    until_prompt(&mut w, Leg::B);
    assert!(early_dialog(&w));
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.last_final(Method::Bye), Some(200));
    assert_eq!(w.caller.invite_finals, vec![487]);
    assert_eq!(w.callee.byes_received, 1, "the callee is hung up");
    assert_eq!(w.tapir.active_calls(), 0, "call left behind");
    w.assert_clean();
}

#[test]
fn hang_up_during_outbound_prompt_answers_the_agent_and_hangs_up_the_callee() {
    let mut w = announced(Side::Callee);
    w.caller.invite(w.now, "1000", true);
    let call = until_prompt(&mut w, Leg::B);
    w.tapir.hang_up(w.now, call);
    w.run_for(Duration::from_secs(1));
    assert_eq!(
        w.caller.byes_received, 0,
        "BYE sent on an unanswered dialog"
    );
    assert_eq!(w.caller.invite_finals, vec![503]);
    assert_eq!(w.callee.byes_received, 1);
    assert_eq!(w.tapir.active_calls(), 0, "call left behind");
    w.assert_clean();
}

#[test]
fn cancel_during_outbound_prompt_hangs_up_the_callee() {
    let mut w = announced(Side::Callee);
    w.caller.invite(w.now, "1000", true);
    until_prompt(&mut w, Leg::B);
    w.caller.cancel(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.invite_finals, vec![487]);
    assert_eq!(w.callee.byes_received, 1);
    assert_eq!(w.tapir.active_calls(), 0);
    w.assert_clean();
}

#[test]
fn caller_update_during_inbound_prompt_is_answered_491_not_sent_to_an_uncalled_leg_b() {
    let mut w = announced(Side::Caller);
    w.caller.invite(w.now, "1000", true);
    let call = until_prompt(&mut w, Leg::A);
    let body = sdp_body(addr(CALLER_RTP), sdp::Direction::SendOnly, 9);
    w.caller
        .request(w.now, Method::Update, Some(("application/sdp", body)));
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.last_final(Method::Update), Some(491));
    assert!(
        w.net.requests(TAPIR, CALLEE, Method::Update).is_empty(),
        "UPDATE sent to a callee that was never called"
    );
    // The prompt ends: the call goes on as usual.
    w.tapir.announcement_done(w.now, call);
    w.run_until(Duration::from_secs(10), |w| w.caller.confirmed);
    assert_eq!(w.caller.invite_finals, vec![200]);
    w.caller.bye(w.now);
    w.assert_clean();
}

#[test]
fn callee_reinvite_during_outbound_prompt_is_answered_491_and_not_relayed() {
    let mut w = announced(Side::Callee);
    w.caller.invite(w.now, "1000", true);
    let call = until_prompt(&mut w, Leg::B);
    let updates = w.updates(Leg::B).len();
    w.callee.reinvite(w.now, sdp::Direction::SendOnly);
    w.run_for(Duration::from_secs(1));
    assert!(w.callee.statuses(Method::Invite).contains(&491));
    // Only the agent's own INVITE: no re-INVITE on a dialog it has not confirmed.
    assert!(w.net.requests(TAPIR, CALLER, Method::Invite).is_empty());
    assert_eq!(
        w.updates(Leg::B).len(),
        updates,
        "a refused offer moved media"
    );
    w.tapir.announcement_done(w.now, call);
    w.run_until(Duration::from_secs(10), |w| w.caller.confirmed);
    assert_eq!(w.caller.invite_finals, vec![200]);
    w.caller.bye(w.now);
    w.assert_clean();
}
