//! Behaviour tests of the policy crate, one module per area of the rules.

mod calls;
mod config;
mod feature_codes;
mod filters;
mod priority;
mod props;
mod sampling;
mod stations;

use policy::{
    Action, ActionKind, CallFacts, CallPolicy, Direction, Event, FlowDirective, Rules, Side,
};

/// A plain inbound-direct call on station `s1` with an agent, team and numbers.
pub fn facts(id: &str) -> CallFacts {
    CallFacts {
        contact_id: id.to_owned(),
        route: Some("main".into()),
        direction: Direction::InboundDirect,
        station: Some("s1".into()),
        agent: Some("alice".into()),
        team: Some("support".into()),
        skill: Some("french".into()),
        queue: Some("general".into()),
        customer_number: "+32470123456".into(),
        dialled_number: "+3222000100".into(),
        is_emergency: false,
        is_third_party: false,
    }
}

/// Rules with the start, stop, pause and resume codes `*2 *3 *4 *5`.
pub fn rules() -> Rules {
    let mut r = Rules::default();
    r.feature_codes.stop = "*3".into();
    r.feature_codes.pause = "*4".into();
    r.feature_codes.resume = "*5".into();
    r
}

pub fn drain(p: &mut CallPolicy) -> Vec<Action> {
    std::iter::from_fn(|| p.poll_action()).collect()
}

pub fn kinds(actions: &[Action]) -> Vec<ActionKind> {
    actions.iter().map(|a| a.kind.clone()).collect()
}

/// Feeds agent digits 100 ms apart starting at `at_ms`; returns the digits forwarded.
pub fn dial(p: &mut CallPolicy, digits: &str, at_ms: u64) -> String {
    dial_side(p, digits, at_ms, Side::Agent)
}

pub fn dial_side(p: &mut CallPolicy, digits: &str, at_ms: u64, side: Side) -> String {
    let mut fwd = String::new();
    for (i, digit) in digits.chars().enumerate() {
        let h = p.handle_event(Event::Dtmf {
            digit,
            side,
            at_ms: at_ms + 100 * i as u64,
        });
        fwd.extend(h.forward_digits());
    }
    fwd
}

pub fn directive(p: &mut CallPolicy, d: FlowDirective) {
    p.handle_event(Event::Directive(d));
}
