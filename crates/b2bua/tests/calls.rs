//! Call flows through the B2BUA core on a clean virtual network: caller ↔ tapir ↔ callee.
//!
//! Each test drives both UAs and tapir through one scenario and checks what crossed each leg,
//! what tapir told the media relay and the event stream, and that nothing is left afterwards
//! (calls, RTP ports, transactions once their timers ran out).

mod common;

use std::time::Duration;

use b2bua::{is_tapir_branch, CallEvent, Leg, MediaCommand, Outcome};
use common::*;
use sdp::Direction;
use sip::{HeaderAccess, Method};

fn media(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::new(MEDIA_IP.parse().unwrap(), port)
}

#[test]
fn basic_call_hung_up_by_the_caller() {
    let mut w = World::new(Setup::default());
    let invite = w.caller.invite(w.now, "1000", true);
    let (a_port, b_port) = w.establish();

    // Leg B is a new dialog: new Call-ID, From tag and Via; only tapir's Via.
    let leg_b = w.callee.requests(Method::Invite);
    assert_eq!(leg_b.len(), 1);
    let b_inv = leg_b[0].clone();
    assert_ne!(b_inv.call_id(), invite.call_id());
    assert_ne!(b_inv.from_tag(), invite.from_tag());
    assert!(b_inv.from_tag().is_some());
    assert_eq!(b_inv.headers.get_all("Via").count(), 1);
    let via = b_inv.top_via().unwrap();
    assert!(is_tapir_branch(&via), "{via:?}");
    assert_eq!(via.host.to_string(), "192.0.2.1");
    assert_ne!(via.branch(), invite.top_via().unwrap().branch());
    assert_eq!(b_inv.max_forwards(), Some(69));
    assert_eq!(b_inv.uri.user(), Some("1000"));
    assert_eq!(
        b_inv.headers.get("X-Tapir-Agent"),
        Some("4711"),
        "end-to-end headers are copied"
    );
    // The offer on leg B points at tapir's media address and the leg-B port.
    let (conn, dir) = sdp_summary(&b_inv.body);
    assert_eq!(conn, media(b_port));
    assert_eq!(dir, Direction::SendRecv);

    // The caller saw 100, 180 and 200; the 200's answer points at the leg-A port.
    let statuses = w.caller.statuses(Method::Invite);
    assert_eq!(statuses, vec![100, 180, 200]);
    let ok = w.caller.responses(Method::Invite)[2];
    assert_eq!(
        ok.call_id(),
        invite.call_id(),
        "leg A keeps the caller's Call-ID"
    );
    assert!(ok.to_tag().is_some());
    assert_eq!(sdp_summary(&ok.body).0, media(a_port));
    assert!(ok.contact().unwrap().uri.to_string().contains("192.0.2.1"));
    // The callee's 180/200 carried its own To tag; the caller must see tapir's instead.
    let b_ok = w.net.responses(CALLEE, TAPIR);
    let b_tag = b_ok.iter().find(|r| r.status == 200).unwrap().to_tag();
    assert_ne!(ok.to_tag(), b_tag);
    assert_ne!(a_port, b_port);

    // Media commands: Open, then each party's real address.
    let opens = w.opened();
    assert_eq!(opens.len(), 1);
    assert_eq!(
        w.updates(Leg::A).last().copied(),
        Some((Some(addr(CALLER_RTP)), true))
    );
    assert_eq!(
        w.updates(Leg::B).last().copied(),
        Some((Some(addr(CALLEE_RTP)), true))
    );
    assert!(matches!(
        w.media.first(),
        Some(MediaCommand::Open {
            customer: Leg::A,
            ..
        })
    ));
    match &w.events[0] {
        CallEvent::Started {
            route,
            a_call_id,
            b_call_id,
            from,
            to,
            x_headers,
            ..
        } => {
            assert_eq!(route, "trunk");
            assert_eq!(a_call_id, invite.call_id());
            assert_eq!(b_call_id, b_inv.call_id());
            assert_eq!(from, "alice");
            assert_eq!(to, "1000");
            assert_eq!(
                x_headers,
                &vec![("X-Tapir-Agent".to_string(), "4711".to_string())]
            );
        }
        e => panic!("first event {e:?}"),
    }
    assert_eq!(w.answered(), 1);
    assert_eq!(w.tapir.active_calls(), 1);
    assert_eq!(w.tapir.free_ports(), w.initial_free_ports - 2);

    // The callee got exactly one ACK, in the leg-B dialog.
    let acks = w.callee.acks();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].call_id(), b_inv.call_id());

    w.run_for(Duration::from_secs(5));
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.statuses(Method::Bye), vec![200]);
    let byes = w.callee.requests(Method::Bye);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].call_id(), b_inv.call_id());
    assert_eq!(w.outcomes(), vec![Outcome::Completed]);
    assert_eq!(w.closes(), 1);
    assert_eq!(w.tapir.free_ports(), w.initial_free_ports, "freed at once");
    w.assert_clean();
    assert_eq!(w.tapir.stats().parse_errors, 0);
}

#[test]
fn the_responses_that_make_the_callers_dialog_carry_its_record_route() {
    // A proxy in front of tapir (a load balancer spreading calls over several nodes)
    // record-routed the INVITE: the 180 and the 200 carry its Record-Route values, in order
    // (RFC 3261 §12.1.1), so the caller's ACK and BYE go back through it to this node.
    let mut w = World::new(Setup::default());
    let rr = [
        "<sip:192.0.2.50;lr=on;ftag=x1>",
        "<sip:198.51.100.7:5070;lr>",
    ];
    w.caller.invite_with(w.now, "1000", true, |r| {
        for v in rr {
            r.headers.push("Record-Route", v);
        }
    });
    w.establish();
    let dialog_makers: Vec<_> = w
        .caller
        .responses(Method::Invite)
        .into_iter()
        .filter(|r| (101..300).contains(&r.status))
        .collect();
    assert_eq!(
        dialog_makers.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![180, 200]
    );
    for r in dialog_makers {
        assert_eq!(
            r.headers.get_all("Record-Route").collect::<Vec<_>>(),
            rr,
            "{} keeps the Record-Route of the INVITE",
            r.status
        );
    }
    // Leg B is tapir's own dialog: the caller's proxies are not on its path.
    let b_inv = w.callee.requests(Method::Invite)[0].clone();
    assert_eq!(b_inv.headers.get_all("Record-Route").count(), 0);
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.statuses(Method::Bye), vec![200]);
    assert_eq!(w.outcomes(), vec![Outcome::Completed]);
}

#[test]
fn basic_call_hung_up_by_the_callee() {
    let mut w = World::new(Setup::default());
    let invite = w.caller.invite(w.now, "1000", true);
    w.establish();
    w.run_for(Duration::from_secs(3));
    w.callee.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.callee.statuses(Method::Bye), vec![200]);
    let byes = w.caller.requests(Method::Bye);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].call_id(), invite.call_id());
    assert_eq!(
        byes[0].from_tag(),
        w.caller.responses(Method::Invite)[2].to_tag(),
        "BYE on leg A comes from tapir's leg-A tag"
    );
    assert_eq!(w.outcomes(), vec![Outcome::Completed]);
    assert_eq!(w.closes(), 1);
    assert!(w.caller.dialog.is_none() && w.callee.dialog.is_none());
    w.assert_clean();
}

#[test]
fn options_outside_a_dialog_is_answered_by_tapir() {
    let mut w = World::new(Setup::default());
    let mut opt = sip::Request::new(
        Method::Options,
        sip::Uri::parse(&format!("sip:{TAPIR}")).unwrap(),
    );
    for (n, v) in [
        (
            "Via",
            "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKping1;rport",
        ),
        ("Max-Forwards", "70"),
        ("From", "<sip:lb@192.0.2.10>;tag=lb1"),
        ("To", "<sip:192.0.2.1>"),
        ("Call-ID", "ping-1"),
        ("CSeq", "1 OPTIONS"),
    ] {
        opt.headers.push(n, v);
    }
    w.inject(CALLER, TAPIR, &opt.to_bytes());
    w.run_for(Duration::from_secs(1));
    let r = w.net.responses(TAPIR, CALLER);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, 200);
    assert!(r[0].headers.get("Allow").unwrap().contains("INVITE"));
    assert!(w.net.messages(TAPIR, CALLEE).is_empty());
    assert_eq!(w.started(), 0);
    w.assert_clean();
}

#[test]
fn a_bare_tag_in_the_callers_to_is_replaced_by_tapirs_and_the_call_ends_normally() {
    let mut w = World::new(Setup::default());
    w.caller.invite_with(w.now, "1000", true, |r| {
        let to = r.headers.get("To").unwrap().to_string();
        r.headers.set("To", format!("{to};tag"));
    });
    w.establish();
    for r in w.caller.responses(Method::Invite).iter().skip(1) {
        let to = r.headers.get("To").unwrap();
        assert_eq!(to.matches("tag").count(), 1, "{to}");
        assert!(r.to_tag().is_some_and(|t| !t.is_empty()), "{to}");
    }
    w.run_for(Duration::from_secs(1));
    w.caller.bye(w.now);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.caller.statuses(Method::Bye), vec![200]);
    assert_eq!(w.outcomes(), vec![Outcome::Completed]);
    w.settle();
    w.assert_clean();
}
