//! Feature codes through a whole call: start, stop, pause/resume, non-matching digits,
//! timeouts, customer digits, forwarding.

use policy::{ActionKind, CallPolicy, Event, OnDemandCommand, OnDemandVia, Reason, Side};

use crate::{dial, dial_side, drain, facts, kinds, rules};

fn answered(r: &policy::Rules) -> CallPolicy {
    let mut p = CallPolicy::new(r, facts("fc"));
    p.handle_event(Event::Answered);
    assert!(drain(&mut p).is_empty());
    p
}

#[test]
fn star_two_starts_until_the_end_of_the_call() {
    let mut p = answered(&rules());
    assert_eq!(dial(&mut p, "*2", 10_000), "", "swallowed");
    let a = drain(&mut p);
    assert_eq!(kinds(&a), vec![ActionKind::Start]);
    assert_eq!(
        a[0].reason,
        Reason::OnDemand {
            command: OnDemandCommand::Start,
            via: OnDemandVia::FeatureCode { code: "*2".into() }
        }
    );
    // Ordinary digits afterwards are forwarded and change nothing.
    assert_eq!(dial(&mut p, "1234#", 20_000), "1234#");
    assert!(drain(&mut p).is_empty());
    p.handle_event(Event::HangUp);
    let end = drain(&mut p);
    assert_eq!(kinds(&end), vec![ActionKind::Stop]);
    assert_eq!(end[0].reason, Reason::HangUp);
}

#[test]
fn stop_pause_and_resume_codes() {
    let mut p = answered(&rules());
    dial(&mut p, "*2", 0);
    dial(&mut p, "*4", 1_000);
    dial(&mut p, "*5", 2_000);
    dial(&mut p, "*3", 3_000);
    assert_eq!(
        kinds(&drain(&mut p)),
        vec![
            ActionKind::Start,
            ActionKind::Pause,
            ActionKind::Resume,
            ActionKind::Stop
        ]
    );
    // The stop code without a recording, and pause while stopped, emit nothing.
    dial(&mut p, "*3", 4_000);
    dial(&mut p, "*4", 5_000);
    assert!(drain(&mut p).is_empty());
    // Starting while the pause is in force starts paused.
    dial(&mut p, "*2", 6_000);
    assert_eq!(
        kinds(&drain(&mut p)),
        vec![ActionKind::Start, ActionKind::Pause]
    );
}

#[test]
fn non_matching_digits_are_released_and_do_nothing() {
    let mut p = answered(&rules());
    assert_eq!(dial(&mut p, "*9", 0), "*9");
    assert_eq!(dial(&mut p, "2", 1_000), "2");
    assert!(!p.decision().recording);
    // `**2`: the first star is given up, the second starts the code.
    assert_eq!(dial(&mut p, "**2", 2_000), "*");
    assert!(p.decision().recording);
}

#[test]
fn timeout_between_digits_resets_the_sequence() {
    let mut r = rules();
    r.feature_codes.inter_digit_timeout_ms = 1_500;
    let mut p = answered(&r);
    let h = p.handle_event(Event::Dtmf {
        digit: '*',
        side: Side::Agent,
        at_ms: 1_000,
    });
    assert!(h.forward_digits().is_empty());
    assert_eq!(p.digit_deadline_ms(), Some(2_500));
    let h = p.handle_event(Event::Dtmf {
        digit: '2',
        side: Side::Agent,
        at_ms: 2_600,
    });
    assert_eq!(h.forward_digits(), ['*', '2']);
    assert!(!p.decision().recording, "too slow: not a feature code");

    // A tick at the deadline releases a lone held star.
    dial(&mut p, "*", 10_000);
    assert!(p.holding_digits());
    let h = p.handle_event(Event::Tick { at_ms: 11_499 });
    assert!(h.forward_digits().is_empty());
    let h = p.handle_event(Event::Tick { at_ms: 11_500 });
    assert_eq!(h.forward_digits(), ['*']);
    assert!(!p.holding_digits());
    assert_eq!(p.digit_deadline_ms(), None);
}

#[test]
fn customer_digits_never_count() {
    let mut p = answered(&rules());
    assert_eq!(dial_side(&mut p, "*2", 0, Side::Customer), "*2");
    assert!(!p.decision().recording);
    assert!(drain(&mut p).is_empty());
    // Interleaved: a customer digit between the agent's `*` and `2` does not disturb the agent.
    dial(&mut p, "*", 1_000);
    assert_eq!(dial_side(&mut p, "9", 1_050, Side::Customer), "9");
    dial(&mut p, "2", 1_100);
    assert!(p.decision().recording);
}

#[test]
fn forwarding_feature_codes_when_configured() {
    let mut r = rules();
    r.feature_codes.forward = true;
    let mut p = answered(&r);
    assert_eq!(dial(&mut p, "*2", 0), "*2");
    assert!(p.decision().recording);
}

#[test]
fn disabled_start_code() {
    let mut r = rules();
    r.feature_codes.start = String::new();
    r.validate().unwrap();
    let mut p = answered(&r);
    assert_eq!(
        dial(&mut p, "*2", 0),
        "*2",
        "the star is held for *3/*4/*5 and released"
    );
    assert!(!p.decision().recording);
}
