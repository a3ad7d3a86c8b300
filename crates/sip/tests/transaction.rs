//! RFC 3261 §17 timers and matching, driven with a virtual clock: time only moves when the test
//! jumps to `poll_timeout()`, so every schedule is checked to the millisecond without sleeping.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sip::message::HeaderAccess;
use sip::transaction::{Event, Output, Peer, Timers, TransactionLayer, TxKey, TIMER_C};
use sip::{Message, Method, Request, Response, Transport};

const CLIENT: &str = "192.0.2.10:5060";
const SERVER: &str = "192.0.2.20:5060";

fn peer(addr: &str, transport: Transport) -> Peer {
    Peer {
        addr: addr.parse::<SocketAddr>().unwrap(),
        transport,
    }
}

fn request(method: &str, branch: &str, transport: Transport, call_id: &str, cseq: u32) -> Request {
    let text = format!(
        "{method} sip:bob@192.0.2.20 SIP/2.0\r\n\
         Via: SIP/2.0/{t} 192.0.2.10:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@192.0.2.10>;tag=a1\r\n\
         To: <sip:bob@192.0.2.20>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:alice@192.0.2.10>\r\n\
         Content-Length: 0\r\n\r\n",
        t = transport.as_str(),
    );
    match sip::parse(text.as_bytes(), true).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

fn invite(branch: &str, transport: Transport) -> Request {
    request("INVITE", branch, transport, "call-1", 1)
}

/// The response a UAS would send, with a To tag.
fn answer(req: &Request, status: u16) -> Response {
    let mut r = req.response(status, "Whatever");
    if status > 100 {
        let to = format!("{};tag=b2", r.headers.get("To").unwrap());
        r.headers.set("To", to);
    }
    r
}

fn ack_for_2xx(resp: &Response, branch: &str) -> Request {
    let text = format!(
        "ACK sip:bob@192.0.2.20 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\n\
         Content-Length: 0\r\n\r\n",
        resp.headers.get("From").unwrap(),
        resp.headers.get("To").unwrap(),
        resp.call_id(),
        resp.cseq().unwrap().seq,
    );
    match sip::parse(text.as_bytes(), true).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

/// Runs the bytes through the parser, as the transport would.
fn reparse(bytes: &[u8]) -> Message {
    sip::parse(bytes, true).expect("the layer emits valid messages")
}

/// Everything the layer produced since the last call, split into transmissions and events.
fn drain(layer: &mut TransactionLayer) -> (Vec<(Peer, Vec<u8>)>, Vec<Event>) {
    let (mut tx, mut ev) = (Vec::new(), Vec::new());
    while let Some(o) = layer.poll_output() {
        match o {
            Output::Transmit { to, data } => tx.push((to, data)),
            Output::Event(e) => ev.push(e),
        }
    }
    (tx, ev)
}

/// Jumps from timeout to timeout until `until` (relative to `t0`), recording at which offset
/// each transmission and event happened.
struct Timeline {
    sends: Vec<Duration>,
    events: Vec<(Duration, Event)>,
}

fn run_until(layer: &mut TransactionLayer, t0: Instant, until: Duration) -> Timeline {
    let mut tl = Timeline {
        sends: Vec::new(),
        events: Vec::new(),
    };
    while let Some(at) = layer.poll_timeout() {
        if at > t0 + until {
            break;
        }
        layer.handle_timeout(at);
        let (tx, ev) = drain(layer);
        tl.sends.extend(tx.iter().map(|_| at - t0));
        tl.events.extend(ev.into_iter().map(|e| (at - t0, e)));
    }
    tl
}

fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|m| Duration::from_millis(*m)).collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn unanswered_invite_over_udp_is_sent_seven_times_then_times_out_at_64_t1() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let key = layer.send_request(
        t0,
        invite("z9hG4bKa1", Transport::Udp),
        peer(SERVER, Transport::Udp),
    );
    let (first, _) = drain(&mut layer);
    assert_eq!(first.len(), 1);
    let tl = run_until(&mut layer, t0, secs(100));
    // Timer A: T1, then doubling without cap (0.5, 1, 2, 4, 8, 16 s apart).
    assert_eq!(tl.sends, ms(&[500, 1500, 3500, 7500, 15500, 31500]));
    assert_eq!(tl.events.len(), 1);
    assert_eq!(tl.events[0].0, secs(32));
    assert!(matches!(&tl.events[0].1, Event::Timeout { key: k } if *k == key));
    assert_eq!(layer.len(), 0);
    assert_eq!(layer.poll_timeout(), None);
    assert_eq!(layer.stats().retransmissions_sent, 6);
    assert_eq!(layer.stats().timeouts, 1);
}

#[test]
fn non_invite_over_udp_caps_at_t2_and_times_out_at_timer_f() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    layer.send_request(
        t0,
        request("OPTIONS", "z9hG4bKo1", Transport::Udp, "c", 1),
        peer(SERVER, Transport::Udp),
    );
    drain(&mut layer);
    let tl = run_until(&mut layer, t0, secs(100));
    // Timer E: 0.5, 1, 2, 4, then T2 = 4 s flat.
    assert_eq!(
        tl.sends,
        ms(&[500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500])
    );
    assert_eq!(tl.events.len(), 1);
    assert_eq!(tl.events[0].0, secs(32));
    assert!(matches!(tl.events[0].1, Event::Timeout { .. }));
    assert_eq!(layer.len(), 0);
}

#[test]
fn non_invite_in_proceeding_retransmits_every_t2_and_final_ends_after_t4() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let req = request("INFO", "z9hG4bKi1", Transport::Udp, "c", 2);
    let key = layer.send_request(t0, req.clone(), peer(SERVER, Transport::Udp));
    drain(&mut layer);
    // First E at 0.5 s, then the provisional arrives at 0.7 s.
    let tl = run_until(&mut layer, t0, ms(&[600])[0]);
    assert_eq!(tl.sends, ms(&[500]));
    let t = t0 + Duration::from_millis(700);
    layer.handle_message(
        t,
        Message::Response(answer(&req, 100)),
        peer(SERVER, Transport::Udp),
    );
    let (_, ev) = drain(&mut layer);
    assert!(
        matches!(&ev[..], [Event::Response { key: k, response }] if *k == key && response.status == 100)
    );
    // E keeps its running value (1.5 s), then fires every T2 in Proceeding.
    let tl = run_until(&mut layer, t0, secs(14));
    assert_eq!(tl.sends, ms(&[1500, 5500, 9500, 13500]));
    let t = t0 + secs(14);
    layer.handle_message(
        t,
        Message::Response(answer(&req, 200)),
        peer(SERVER, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(tx.is_empty());
    assert!(matches!(&ev[..], [Event::Response { response, .. }] if response.status == 200));
    // A retransmitted final is absorbed in Completed.
    layer.handle_message(
        t,
        Message::Response(answer(&req, 200)),
        peer(SERVER, Transport::Udp),
    );
    assert_eq!(drain(&mut layer).1.len(), 0);
    // Timer K = T4.
    assert_eq!(layer.poll_timeout(), Some(t + secs(5)));
    let tl = run_until(&mut layer, t0, secs(100));
    assert!(tl.sends.is_empty() && tl.events.is_empty());
    assert_eq!(layer.len(), 0);
}

#[test]
fn over_tcp_nothing_is_retransmitted_but_timers_b_and_f_still_run() {
    for method in ["INVITE", "BYE"] {
        let mut layer = TransactionLayer::new(Timers::default());
        let t0 = Instant::now();
        layer.send_request(
            t0,
            request(method, "z9hG4bKt1", Transport::Tcp, "c", 1),
            peer(SERVER, Transport::Tcp),
        );
        assert_eq!(drain(&mut layer).0.len(), 1);
        let tl = run_until(&mut layer, t0, secs(100));
        assert!(tl.sends.is_empty(), "{method}: {:?}", tl.sends);
        assert_eq!(tl.events.len(), 1);
        assert_eq!(tl.events[0].0, secs(32));
        assert_eq!(layer.len(), 0);
    }
}

/// A connection that cannot be opened (or whose TLS handshake fails) ends at once every
/// client transaction still waiting to get through to that peer, with a transport error,
/// instead of after Timer B or F. A transaction to another peer, one over the same address
/// on another transport, one that has had a provisional response, and a server transaction
/// are left alone.
#[test]
fn a_transport_error_ends_the_waiting_client_transactions_to_that_peer_at_once() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let tls = peer(SERVER, Transport::Tls);
    let invite_key = layer.send_request(
        t0,
        request("INVITE", "z9hG4bKe1", Transport::Tls, "c1", 1),
        tls,
    );
    let bye_key = layer.send_request(
        t0,
        request("BYE", "z9hG4bKe2", Transport::Tls, "c2", 2),
        tls,
    );
    let ringing = request("INVITE", "z9hG4bKe3", Transport::Tls, "c3", 1);
    let ringing_key = layer.send_request(t0, ringing.clone(), tls);
    let other = layer.send_request(
        t0,
        request("INVITE", "z9hG4bKe4", Transport::Tls, "c4", 1),
        peer("192.0.2.30:5061", Transport::Tls),
    );
    let tcp = layer.send_request(
        t0,
        request("INVITE", "z9hG4bKe5", Transport::Tcp, "c5", 1),
        peer(SERVER, Transport::Tcp),
    );
    layer.handle_message(t0, Message::Response(answer(&ringing, 180)), tls);
    let _ = drain(&mut layer);
    assert_eq!(layer.len(), 5);

    // UDP has no connection: nothing happens.
    layer.transport_error(peer(SERVER, Transport::Udp));
    assert!(drain(&mut layer).1.is_empty());

    layer.transport_error(tls);
    let (sent, events) = drain(&mut layer);
    assert!(sent.is_empty());
    let failed: Vec<TxKey> = events
        .into_iter()
        .map(|e| match e {
            Event::TransportError { key } => key,
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(failed, vec![invite_key, bye_key]);
    assert_eq!(layer.stats().transport_errors, 2);
    assert_eq!(
        layer.len(),
        3,
        "the ringing one, the other peer's and the TCP one remain"
    );

    // A second report for the same peer finds nothing more to fail; the ringing INVITE
    // still gets its final response, and the others still time out at Timer B.
    layer.transport_error(tls);
    assert!(drain(&mut layer).1.is_empty());
    layer.handle_message(t0, Message::Response(answer(&ringing, 486)), tls);
    let (_, events) = drain(&mut layer);
    assert!(
        matches!(&events[..], [Event::Response { key, .. }] if *key == ringing_key),
        "{events:?}"
    );
    let tl = run_until(&mut layer, t0, secs(40));
    let timed_out: Vec<&TxKey> = tl
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Timeout { key } => Some(key),
            _ => None,
        })
        .collect();
    assert_eq!(timed_out, vec![&other, &tcp]);
}

/// Ten thousand requests over one long-lived connection, each answered and ended, then the
/// connection fails: nothing that has ended is reported again.
#[test]
fn a_transport_error_after_many_ended_transactions_fails_nothing() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let tcp = peer(SERVER, Transport::Tcp);
    for i in 0..10_000u32 {
        let r = request(
            "OPTIONS",
            &format!("z9hG4bKix{i}"),
            Transport::Tcp,
            "ix",
            i + 1,
        );
        layer.send_request(t0, r.clone(), tcp);
        layer.handle_message(t0, Message::Response(answer(&r, 200)), tcp);
        let _ = drain(&mut layer);
    }
    // Non-INVITE over TCP: Timer K is zero, so every one of them is gone.
    let _ = run_until(&mut layer, t0, secs(1));
    assert_eq!(layer.len(), 0);
    layer.transport_error(tcp);
    assert!(drain(&mut layer).1.is_empty());
}

#[test]
fn server_invite_sends_100_at_once_and_repeats_last_response_on_retransmission() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKs1", Transport::Udp);
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, peer(CLIENT, Transport::Udp));
    let Message::Response(trying) = reparse(&tx[0].1) else {
        panic!("expected a response")
    };
    assert_eq!(trying.status, 100);
    let key = match &ev[..] {
        [Event::Request { key, request, .. }] => {
            assert_eq!(request.method, Method::Invite);
            key.clone()
        }
        other => panic!("{other:?}"),
    };
    // Retransmission: absorbed, 100 repeated, no second Request event.
    layer.handle_message(
        t0 + ms(&[500])[0],
        Message::Request(inv.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(ev.is_empty());
    assert_eq!(tx.len(), 1);
    assert_eq!(
        tx[0].1,
        trying.to_bytes(),
        "the 100 is repeated byte for byte"
    );
    // After a 180, the 180 is what gets repeated.
    layer.respond(t0 + secs(1), &key, answer(&inv, 180));
    let (tx, _) = drain(&mut layer);
    layer.handle_message(
        t0 + secs(2),
        Message::Request(inv),
        peer(CLIENT, Transport::Udp),
    );
    let (tx2, _) = drain(&mut layer);
    assert_eq!(tx2.len(), 1);
    assert_eq!(tx2[0].1, tx[0].1);
    assert_eq!(layer.stats().retransmissions_absorbed, 2);
    // The INVITE server transaction has no timer of its own while proceeding.
    assert_eq!(layer.poll_timeout(), None);
}

#[test]
fn server_error_final_is_retransmitted_until_ack_then_timer_i() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKs2", Transport::Udp);
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (_, ev) = drain(&mut layer);
    let Event::Request { key, .. } = &ev[0] else {
        panic!()
    };
    let busy = answer(&inv, 486);
    layer.respond(t0, key, busy.clone());
    assert_eq!(drain(&mut layer).0.len(), 1);
    // Timer G: T1, doubling, capped at T2.
    let tl = run_until(&mut layer, t0, secs(10));
    assert_eq!(tl.sends, ms(&[500, 1500, 3500, 7500]));
    // ACK for the non-2xx final: same branch as the INVITE (§17.1.1.3).
    let ack = ack_for_2xx(&busy, "z9hG4bKs2");
    let t_ack = t0 + secs(10);
    layer.handle_message(
        t_ack,
        Message::Request(ack.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(
        tx.is_empty() && ev.is_empty(),
        "ACK of a non-2xx is absorbed"
    );
    // Confirmed: ACK retransmissions absorbed, no more 486s, gone after T4.
    layer.handle_message(
        t_ack + secs(1),
        Message::Request(ack),
        peer(CLIENT, Transport::Udp),
    );
    assert!(drain(&mut layer).1.is_empty());
    assert_eq!(layer.poll_timeout(), Some(t_ack + secs(5)));
    let tl = run_until(&mut layer, t0, secs(100));
    assert!(tl.sends.is_empty() && tl.events.is_empty());
    assert_eq!(layer.len(), 0);
}

#[test]
fn server_error_final_without_ack_stops_at_timer_h() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKs3", Transport::Udp);
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (_, ev) = drain(&mut layer);
    let Event::Request { key, .. } = &ev[0] else {
        panic!()
    };
    layer.respond(t0, key, answer(&inv, 603));
    drain(&mut layer);
    let tl = run_until(&mut layer, t0, secs(100));
    assert_eq!(
        tl.sends,
        ms(&[500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500])
    );
    assert!(tl.events.is_empty(), "Timer H has nothing to tell the user");
    assert_eq!(layer.len(), 0);
    assert_eq!(layer.poll_timeout(), None);
}

#[test]
fn server_2xx_is_retransmitted_until_the_ack_on_its_own_branch() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKs4", Transport::Udp);
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (_, ev) = drain(&mut layer);
    let Event::Request { key, .. } = &ev[0] else {
        panic!()
    };
    let ok = answer(&inv, 200);
    layer.respond(t0, key, ok.clone());
    let (tx, _) = drain(&mut layer);
    assert_eq!(tx.len(), 1);
    let tl = run_until(&mut layer, t0, secs(4));
    assert_eq!(tl.sends, ms(&[500, 1500, 3500]));
    // An INVITE retransmission in Accepted is absorbed without a new Request event.
    layer.handle_message(
        t0 + secs(4),
        Message::Request(inv.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(tx.is_empty() && ev.is_empty());
    // The ACK for a 2xx is a separate transaction with its own branch.
    let ack = ack_for_2xx(&ok, "z9hG4bKack4");
    let t_ack = t0 + secs(5);
    layer.handle_message(
        t_ack,
        Message::Request(ack.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (_, ev) = drain(&mut layer);
    assert!(matches!(&ev[..], [Event::Ack { request, .. }] if request.method == Method::Ack));
    // A retransmitted ACK, and a late INVITE retransmission, are both absorbed (Timer L).
    layer.handle_message(
        t_ack + secs(1),
        Message::Request(ack),
        peer(CLIENT, Transport::Udp),
    );
    layer.handle_message(
        t_ack + secs(2),
        Message::Request(inv),
        peer(CLIENT, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(tx.is_empty() && ev.is_empty(), "{ev:?}");
    // No more 2xx after the ACK; the transaction is gone 64*T1 after the 2xx.
    let tl = run_until(&mut layer, t0, secs(100));
    assert!(tl.sends.is_empty() && tl.events.is_empty());
    assert_eq!(layer.len(), 0);
    assert_eq!(layer.poll_timeout(), None);
}

#[test]
fn server_2xx_never_acked_reports_ack_timeout_and_forgets_everything() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKs5", Transport::Udp, "call-ack-timeout", 7);
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (_, ev) = drain(&mut layer);
    let Event::Request { key, .. } = &ev[0] else {
        panic!()
    };
    let ok = answer(&inv, 200);
    layer.respond(t0, key, ok.clone());
    drain(&mut layer);
    let tl = run_until(&mut layer, t0, secs(100));
    assert_eq!(
        tl.sends,
        ms(&[500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500])
    );
    assert_eq!(tl.events.len(), 1);
    assert_eq!(tl.events[0].0, secs(32));
    match &tl.events[0].1 {
        Event::AckTimeout { call_id, cseq } => {
            assert_eq!(call_id, "call-ack-timeout");
            assert_eq!(*cseq, 7);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(layer.len(), 0);
    // The ACK-matching entry went with the transaction: a late ACK is just an ACK.
    layer.handle_message(
        t0 + secs(40),
        Message::Request(ack_for_2xx(&ok, "z9hG4bKlate")),
        peer(CLIENT, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(tx.is_empty());
    assert!(matches!(&ev[..], [Event::Ack { .. }]));
    assert_eq!(layer.len(), 0);
}

#[test]
fn server_2xx_over_tcp_is_not_retransmitted_but_still_awaits_the_ack() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKs6", Transport::Tcp);
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(CLIENT, Transport::Tcp),
    );
    let (_, ev) = drain(&mut layer);
    let Event::Request { key, .. } = &ev[0] else {
        panic!()
    };
    layer.respond(t0, key, answer(&inv, 200));
    drain(&mut layer);
    let tl = run_until(&mut layer, t0, secs(100));
    assert!(tl.sends.is_empty());
    assert!(matches!(
        &tl.events[..],
        [(d, Event::AckTimeout { .. })] if *d == secs(32)
    ));
    assert_eq!(layer.len(), 0);
}

#[test]
fn client_error_final_is_acked_on_the_same_branch_and_reacked_then_timer_d() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKc1", Transport::Udp);
    let key = layer.send_request(t0, inv.clone(), peer(SERVER, Transport::Udp));
    drain(&mut layer);
    let busy = answer(&inv, 486);
    let t1 = t0 + ms(&[200])[0];
    layer.handle_message(
        t1,
        Message::Response(busy.clone()),
        peer(SERVER, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(
        matches!(&ev[..], [Event::Response { key: k, response }] if *k == key && response.status == 486)
    );
    assert_eq!(tx.len(), 1);
    let Message::Request(ack) = reparse(&tx[0].1) else {
        panic!()
    };
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKc1"));
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(ack.cseq().unwrap().method, Method::Ack);
    assert_eq!(
        ack.to_tag().as_deref(),
        Some("b2"),
        "To comes from the response"
    );
    assert_eq!(ack.uri, inv.uri);
    // Retransmitted final: ACK again, no second event.
    layer.handle_message(
        t1 + secs(1),
        Message::Response(busy),
        peer(SERVER, Transport::Udp),
    );
    let (tx2, ev) = drain(&mut layer);
    assert!(ev.is_empty());
    assert_eq!(tx2.len(), 1);
    assert_eq!(tx2[0].1, tx[0].1);
    // No retransmission of the INVITE any more, and Timer D is 32 s.
    assert_eq!(layer.poll_timeout(), Some(t1 + secs(32)));
    let tl = run_until(&mut layer, t0, secs(100));
    assert!(tl.sends.is_empty() && tl.events.is_empty());
    assert_eq!(layer.len(), 0);
}

#[test]
fn client_2xx_ends_the_transaction_and_retransmissions_come_up_as_stray() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKc2", Transport::Udp);
    layer.send_request(t0, inv.clone(), peer(SERVER, Transport::Udp));
    drain(&mut layer);
    let ok = answer(&inv, 200);
    layer.handle_message(
        t0,
        Message::Response(ok.clone()),
        peer(SERVER, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(tx.is_empty(), "the transaction does not ACK a 2xx");
    assert!(matches!(&ev[..], [Event::Response { response, .. }] if response.status == 200));
    assert_eq!(layer.len(), 0);
    assert_eq!(layer.poll_timeout(), None);
    layer.handle_message(
        t0 + secs(1),
        Message::Response(ok),
        peer(SERVER, Transport::Udp),
    );
    let (_, ev) = drain(&mut layer);
    assert!(
        matches!(&ev[..], [Event::Stray2xx { response, from }] if response.status == 200 && *from == peer(SERVER, Transport::Udp))
    );
}

#[test]
fn invite_in_proceeding_outlives_timer_b_until_timer_c_then_cancels() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKc3", Transport::Udp);
    let key = layer.send_request(t0, inv.clone(), peer(SERVER, Transport::Udp));
    drain(&mut layer);
    layer.handle_message(
        t0,
        Message::Response(answer(&inv, 180)),
        peer(SERVER, Transport::Udp),
    );
    drain(&mut layer);
    // Ringing for a minute is fine: Timer B does not apply in Proceeding.
    let tl = run_until(&mut layer, t0, secs(60));
    assert!(tl.sends.is_empty() && tl.events.is_empty());
    // A new provisional restarts Timer C.
    let t_ring = t0 + secs(60);
    layer.handle_message(
        t_ring,
        Message::Response(answer(&inv, 180)),
        peer(SERVER, Transport::Udp),
    );
    drain(&mut layer);
    assert_eq!(layer.poll_timeout(), Some(t_ring + TIMER_C));
    let at = layer.poll_timeout().unwrap();
    layer.handle_timeout(at);
    let (tx, ev) = drain(&mut layer);
    assert!(matches!(&ev[..], [Event::Timeout { key: k }] if *k == key));
    assert_eq!(tx.len(), 1);
    let Message::Request(cancel) = reparse(&tx[0].1) else {
        panic!()
    };
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.top_via().unwrap().branch(), Some("z9hG4bKc3"));
    // The 487 is ACKed by the transaction but not reported again.
    layer.handle_message(
        at + secs(1),
        Message::Response(answer(&inv, 487)),
        peer(SERVER, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(ev.is_empty(), "{ev:?}");
    assert!(matches!(reparse(&tx[0].1), Message::Request(r) if r.method == Method::Ack));
    let tl = run_until(&mut layer, t0, secs(1000));
    // The CANCEL transaction times out unanswered, which the user may see; nothing is left.
    assert!(tl
        .events
        .iter()
        .all(|(_, e)| matches!(e, Event::Timeout { key } if *key.method() == Method::Cancel)));
    assert_eq!(layer.len(), 0);
}

#[test]
fn cancel_before_any_provisional_waits_for_the_1xx() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKc4", Transport::Udp);
    let key = layer.send_request(t0, inv.clone(), peer(SERVER, Transport::Udp));
    drain(&mut layer);
    layer.cancel(t0 + ms(&[100])[0], &key);
    let (tx, _) = drain(&mut layer);
    assert!(
        tx.is_empty(),
        "§9.1: no CANCEL before a provisional response"
    );
    let t1 = t0 + ms(&[300])[0];
    layer.handle_message(
        t1,
        Message::Response(answer(&inv, 180)),
        peer(SERVER, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(matches!(&ev[..], [Event::Response { response, .. }] if response.status == 180));
    assert_eq!(tx.len(), 1);
    let Message::Request(cancel) = reparse(&tx[0].1) else {
        panic!()
    };
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.uri, inv.uri);
    assert_eq!(cancel.call_id(), inv.call_id());
    assert_eq!(cancel.cseq().unwrap().seq, inv.cseq().unwrap().seq);
    assert_eq!(cancel.cseq().unwrap().method, Method::Cancel);
    assert_eq!(cancel.headers.get("To"), inv.headers.get("To"));
    assert_eq!(cancel.top_via(), inv.top_via());
    // Two live client transactions now: the INVITE and its CANCEL; a second cancel() is a no-op.
    assert_eq!(layer.len(), 2);
    layer.cancel(t1, &key);
    assert!(drain(&mut layer).0.is_empty());
}

#[test]
fn cancel_after_a_final_response_is_not_sent() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKc5", Transport::Udp);
    let key = layer.send_request(t0, inv.clone(), peer(SERVER, Transport::Udp));
    layer.cancel(t0, &key);
    layer.handle_message(
        t0,
        Message::Response(answer(&inv, 486)),
        peer(SERVER, Transport::Udp),
    );
    let (tx, _) = drain(&mut layer);
    // The INVITE and the ACK; never a CANCEL.
    let methods: Vec<_> = tx
        .iter()
        .map(|(_, b)| match reparse(b) {
            Message::Request(r) => r.method,
            Message::Response(_) => panic!(),
        })
        .collect();
    assert_eq!(methods, vec![Method::Invite, Method::Ack]);
}

#[test]
fn server_cancel_matching_a_pending_invite_gets_200_and_cancels_it() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKs7", Transport::Udp);
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (_, ev) = drain(&mut layer);
    let Event::Request { key: inv_key, .. } = &ev[0] else {
        panic!()
    };
    let cancel = sip::transaction::build_cancel(&inv);
    layer.handle_message(
        t0,
        Message::Request(cancel.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert_eq!(tx.len(), 1);
    let Message::Response(r) = reparse(&tx[0].1) else {
        panic!()
    };
    assert_eq!(r.status, 200);
    assert_eq!(r.cseq().unwrap().method, Method::Cancel);
    assert!(matches!(&ev[..], [Event::Cancelled { invite }] if invite == inv_key));
    // The user then answers the INVITE with 487.
    layer.respond(t0, inv_key, answer(&inv, 487));
    assert_eq!(drain(&mut layer).0.len(), 1);
    // A retransmitted CANCEL gets the same 200 and no second Cancelled.
    layer.handle_message(
        t0 + secs(1),
        Message::Request(cancel),
        peer(CLIENT, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(ev.is_empty());
    assert_eq!(tx.len(), 1);
    assert!(matches!(reparse(&tx[0].1), Message::Response(r) if r.status == 200));
}

#[test]
fn server_cancel_matching_nothing_gets_481() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let inv = invite("z9hG4bKnone", Transport::Udp);
    let cancel = sip::transaction::build_cancel(&inv);
    layer.handle_message(t0, Message::Request(cancel), peer(CLIENT, Transport::Udp));
    let (tx, ev) = drain(&mut layer);
    assert!(ev.is_empty());
    let Message::Response(r) = reparse(&tx[0].1) else {
        panic!()
    };
    assert_eq!(r.status, 481);
    // The CANCEL server transaction lingers for Timer J, then goes.
    assert_eq!(layer.len(), 1);
    run_until(&mut layer, t0, secs(100));
    assert_eq!(layer.len(), 0);
}

#[test]
fn custom_t1_t2_t4_are_honoured() {
    let timers = Timers {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(1000),
    };
    // Timer A/B.
    let mut layer = TransactionLayer::new(timers);
    let t0 = Instant::now();
    layer.send_request(
        t0,
        invite("z9hG4bKx1", Transport::Udp),
        peer(SERVER, Transport::Udp),
    );
    drain(&mut layer);
    let tl = run_until(&mut layer, t0, secs(100));
    assert_eq!(tl.sends, ms(&[100, 300, 700, 1500, 3100, 6300]));
    assert_eq!(tl.events[0].0, ms(&[6400])[0]);
    // Timer E/F and K.
    let req = request("BYE", "z9hG4bKx2", Transport::Udp, "c", 2);
    layer.send_request(t0, req.clone(), peer(SERVER, Transport::Udp));
    drain(&mut layer);
    let tl = run_until(&mut layer, t0, ms(&[1600])[0]);
    assert_eq!(tl.sends, ms(&[100, 300, 700, 1100, 1500]));
    let t = t0 + ms(&[1600])[0];
    layer.handle_message(
        t,
        Message::Response(answer(&req, 200)),
        peer(SERVER, Transport::Udp),
    );
    drain(&mut layer);
    assert_eq!(layer.poll_timeout(), Some(t + timers.t4));
    // Timer G/H on the server side.
    let inv = invite("z9hG4bKx3", Transport::Udp);
    layer.handle_message(
        t,
        Message::Request(inv.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (_, ev) = drain(&mut layer);
    let key: TxKey = match &ev[..] {
        [Event::Request { key, .. }] => key.clone(),
        other => panic!("{other:?}"),
    };
    layer.respond(t, &key, answer(&inv, 500));
    drain(&mut layer);
    let t_base = t;
    let mut sends = Vec::new();
    while let Some(at) = layer.poll_timeout() {
        layer.handle_timeout(at);
        let (tx, _) = drain(&mut layer);
        sends.extend(tx.iter().map(|_| at - t_base));
    }
    // G: 100, 200, 400, 400, ... until H at 6.4 s; K for the BYE at 2.6 s sends nothing.
    let expected: Vec<u64> = [100, 300, 700]
        .into_iter()
        .chain((1..).map(|i| 700 + 400 * i).take_while(|m| *m < 6400))
        .collect();
    assert_eq!(sends, ms(&expected));
    assert_eq!(layer.len(), 0);
}

#[test]
fn rfc2543_ack_for_2xx_without_branch_stops_the_2xx() {
    // inv2543-style peer: no branch, so the ACK for the 2xx has the INVITE's own key.
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let text = "INVITE sip:bob@192.0.2.20 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10\r\n\
        From: <sip:alice@192.0.2.10>\r\nTo: <sip:bob@192.0.2.20>\r\n\
        Call-ID: old-style\r\nCSeq: 5 INVITE\r\n\r\n";
    let Message::Request(inv) = sip::parse(text.as_bytes(), true).unwrap() else {
        panic!()
    };
    layer.handle_message(
        t0,
        Message::Request(inv.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (_, ev) = drain(&mut layer);
    let Event::Request { key, .. } = &ev[0] else {
        panic!()
    };
    assert!(key.branch().starts_with("2543:"));
    let ok = answer(&inv, 200);
    layer.respond(t0, key, ok.clone());
    drain(&mut layer);
    let ack_text = format!(
        "ACK sip:bob@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10\r\n\
         From: <sip:alice@192.0.2.10>\r\nTo: {}\r\nCall-ID: old-style\r\nCSeq: 5 ACK\r\n\r\n",
        ok.headers.get("To").unwrap()
    );
    let ack = sip::parse(ack_text.as_bytes(), true).unwrap();
    layer.handle_message(t0 + secs(1), ack, peer(CLIENT, Transport::Udp));
    let (_, ev) = drain(&mut layer);
    assert!(matches!(&ev[..], [Event::Ack { .. }]), "{ev:?}");
    let tl = run_until(&mut layer, t0, secs(100));
    assert!(tl.sends.is_empty(), "no 2xx retransmission after the ACK");
    assert!(tl.events.is_empty(), "no AckTimeout");
    assert_eq!(layer.len(), 0);
}

#[test]
fn bare_magic_cookie_branches_do_not_merge_transactions() {
    // RFC 4475 §3.2.1: `branch=z9hG4bK` identifies nothing; two such requests are two
    // transactions.
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    for call in ["one", "two"] {
        let r = request("OPTIONS", "z9hG4bK", Transport::Udp, call, 1);
        layer.handle_message(t0, Message::Request(r), peer(CLIENT, Transport::Udp));
    }
    let (_, ev) = drain(&mut layer);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::Request { .. }))
            .count(),
        2
    );
    assert_eq!(layer.len(), 2);
}

#[test]
fn server_non_invite_lingers_for_timer_j_and_repeats_its_final() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let bye = request("BYE", "z9hG4bKj1", Transport::Udp, "c", 3);
    layer.handle_message(
        t0,
        Message::Request(bye.clone()),
        peer(CLIENT, Transport::Udp),
    );
    let (tx, ev) = drain(&mut layer);
    assert!(tx.is_empty(), "no 100 for non-INVITE");
    let Event::Request { key, .. } = &ev[0] else {
        panic!()
    };
    // Retransmission before the answer: nothing to repeat yet.
    layer.handle_message(
        t0,
        Message::Request(bye.clone()),
        peer(CLIENT, Transport::Udp),
    );
    assert!(drain(&mut layer).0.is_empty());
    layer.respond(t0, key, answer(&bye, 200));
    assert_eq!(drain(&mut layer).0.len(), 1);
    layer.handle_message(
        t0 + secs(10),
        Message::Request(bye),
        peer(CLIENT, Transport::Udp),
    );
    assert_eq!(drain(&mut layer).0.len(), 1);
    assert_eq!(layer.poll_timeout(), Some(t0 + secs(32)));
    run_until(&mut layer, t0, secs(100));
    assert_eq!(layer.len(), 0);
}

#[test]
fn responses_go_to_the_via_port_or_the_source_with_rport() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    // Via says 5060 but the packet came from 40000: without rport the Via port wins (§18.2.2).
    let r = request("OPTIONS", "z9hG4bKp1", Transport::Udp, "c", 1);
    layer.handle_message(
        t0,
        Message::Request(r),
        peer("192.0.2.10:40000", Transport::Udp),
    );
    let (_, ev) = drain(&mut layer);
    let Event::Request { key, request, .. } = &ev[0] else {
        panic!()
    };
    layer.respond(t0, key, request.response(200, "OK"));
    let (tx, _) = drain(&mut layer);
    assert_eq!(tx[0].0, peer("192.0.2.10:5060", Transport::Udp));
    // With rport, the source port (RFC 3581), and it is written into the Via.
    let text = "OPTIONS sip:bob@192.0.2.20 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bKp2\r\n\
        From: <sip:alice@192.0.2.10>;tag=x\r\nTo: <sip:bob@192.0.2.20>\r\n\
        Call-ID: rp\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n";
    let m = sip::parse(text.as_bytes(), true).unwrap();
    layer.handle_message(t0, m, peer("198.51.100.7:40000", Transport::Udp));
    let (_, ev) = drain(&mut layer);
    let Event::Request { key, request, .. } = &ev[0] else {
        panic!()
    };
    let via = request.top_via().unwrap();
    assert_eq!(via.params.value("rport"), Some("40000"));
    assert_eq!(via.params.value("received"), Some("198.51.100.7"));
    layer.respond(t0, key, request.response(200, "OK"));
    let (tx, _) = drain(&mut layer);
    assert_eq!(tx[0].0, peer("198.51.100.7:40000", Transport::Udp));
}
