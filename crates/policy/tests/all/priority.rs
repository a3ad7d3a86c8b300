//! The priority order, pair by pair: consent refusal > a `never` station > on-demand > flow
//! directives > do-not-record > record. For every pair of sources, every way each can be expressed, and both
//! orders of arrival, the higher-ranked source decides and is named as the reason.

use std::collections::BTreeSet;

use policy::{
    CallPolicy, Consent, DoNotRecordPolicy, Event, Filter, FlowDirective, Level, Mode,
    RecordPolicy, Rules, StationOverride,
};

use crate::{dial, facts, rules};

/// One way a source can vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vote {
    ConsentDenied,
    CodeStart,
    CodeStop,
    ApiStart,
    ApiStop,
    FlowStart,
    FlowStop,
    FlowAgentOnly,
    FlowDoNotRecord,
    DnrPolicy,
    StationNever,
    RecordPolicy,
    StationAlways,
}

impl Vote {
    fn level(self) -> Level {
        match self {
            Vote::ConsentDenied => Level::Consent,
            Vote::CodeStart | Vote::CodeStop | Vote::ApiStart | Vote::ApiStop => Level::OnDemand,
            Vote::FlowStart | Vote::FlowStop | Vote::FlowAgentOnly | Vote::FlowDoNotRecord => {
                Level::FlowDirective
            }
            Vote::StationNever => Level::StationNever,
            Vote::DnrPolicy => Level::DoNotRecord,
            Vote::RecordPolicy | Vote::StationAlways => Level::Record,
        }
    }

    fn records(self) -> bool {
        matches!(
            self,
            Vote::CodeStart
                | Vote::ApiStart
                | Vote::FlowStart
                | Vote::FlowAgentOnly
                | Vote::RecordPolicy
                | Vote::StationAlways
        )
    }

    /// Static votes live in the rules and take effect at the answer.
    fn is_static(self) -> bool {
        matches!(
            self.level(),
            Level::StationNever | Level::DoNotRecord | Level::Record
        )
    }

    fn station_mode(self) -> Option<Mode> {
        match self {
            Vote::StationNever => Some(Mode::Never),
            Vote::StationAlways => Some(Mode::Always),
            _ => None,
        }
    }

    fn configure(self, r: &mut Rules) {
        match self {
            Vote::DnrPolicy => r.do_not_record_policies.push(DoNotRecordPolicy {
                name: "no-support".into(),
                filter: Filter {
                    teams: vec!["support".into()],
                    ..Filter::default()
                },
            }),
            Vote::RecordPolicy => r.record_policies.push(RecordPolicy {
                name: "all-support".into(),
                percentage: 100,
                filter: Filter {
                    teams: vec!["support".into()],
                    ..Filter::default()
                },
                options: None,
            }),
            Vote::StationNever | Vote::StationAlways => {
                r.stations.accounts.insert(
                    "s1".into(),
                    StationOverride {
                        inbound_direct: self.station_mode(),
                        ..StationOverride::default()
                    },
                );
            }
            _ => {}
        }
    }

    fn send(self, p: &mut CallPolicy, at_ms: u64) {
        match self {
            Vote::ConsentDenied => {
                p.handle_event(Event::Consent(Consent::Denied));
            }
            Vote::CodeStart => {
                assert_eq!(dial(p, "*2", at_ms), "", "feature code is swallowed");
            }
            Vote::CodeStop => {
                assert_eq!(dial(p, "*3", at_ms), "");
            }
            Vote::ApiStart => {
                p.handle_event(Event::ApiStart);
            }
            Vote::ApiStop => {
                p.handle_event(Event::ApiStop);
            }
            Vote::FlowStart => {
                p.handle_event(Event::Directive(FlowDirective::StartCallRecording));
            }
            Vote::FlowStop => {
                p.handle_event(Event::Directive(FlowDirective::StopCallRecording));
            }
            Vote::FlowAgentOnly => {
                p.handle_event(Event::Directive(FlowDirective::AgentOnly));
            }
            Vote::FlowDoNotRecord => {
                p.handle_event(Event::Directive(FlowDirective::DoNotRecord));
            }
            _ => unreachable!("static votes are configured, not sent"),
        }
    }
}

const ALL: [Vote; 13] = [
    Vote::ConsentDenied,
    Vote::CodeStart,
    Vote::CodeStop,
    Vote::ApiStart,
    Vote::ApiStop,
    Vote::FlowStart,
    Vote::FlowStop,
    Vote::FlowAgentOnly,
    Vote::FlowDoNotRecord,
    Vote::DnrPolicy,
    Vote::StationNever,
    Vote::RecordPolicy,
    Vote::StationAlways,
];

/// Runs a call where `first` arrives before `second`. Static votes arrive at the answer, so a
/// dynamic vote placed first is sent before the answer and one placed second after it.
fn run(first: Vote, second: Vote) -> CallPolicy {
    let votes: &[Vote] = if first == second {
        &[first]
    } else {
        &[first, second]
    };
    let mut r = rules();
    for v in votes {
        v.configure(&mut r);
    }
    r.validate().expect("valid rules");
    let mut p = CallPolicy::new(&r, facts("call-priority"));
    let mut t = 1_000;
    let mut answered = false;
    for &v in votes {
        if v.is_static() {
            if !answered {
                p.handle_event(Event::Answered);
                answered = true;
            }
        } else {
            if !answered && !first.is_static() && !second.is_static() {
                // Both dynamic: answer first so both arrive during the conversation.
                p.handle_event(Event::Answered);
                answered = true;
            }
            v.send(&mut p, t);
            t += 1_000;
        }
    }
    if !answered {
        p.handle_event(Event::Answered);
    }
    p
}

#[test]
fn each_source_alone_decides_its_own_way() {
    for v in ALL {
        let p = run(v, v);
        let d = p.decision();
        assert_eq!(d.recording, v.records(), "{v:?} alone");
        assert_eq!(
            d.reason.level(),
            Some(v.level()),
            "{v:?} alone: {}",
            d.reason
        );
    }
}

#[test]
fn higher_source_wins_every_pair_in_both_orders() {
    let mut pairs = BTreeSet::new();
    let mut cases = 0;
    for hi in ALL {
        for lo in ALL {
            if hi.level() >= lo.level() {
                continue;
            }
            // Two station modes cannot both apply to one station and direction.
            if hi.station_mode().is_some() && lo.station_mode().is_some() {
                continue;
            }
            for (first, second) in [(hi, lo), (lo, hi)] {
                let p = run(first, second);
                let d = p.decision();
                assert_eq!(
                    d.recording,
                    hi.records(),
                    "{hi:?} must beat {lo:?} (arrival {first:?} then {second:?}); log: {:#?}",
                    p.explain()
                );
                assert_eq!(
                    d.reason.level(),
                    Some(hi.level()),
                    "{hi:?} over {lo:?} ({first:?} first): reason was {}",
                    d.reason
                );
                cases += 1;
            }
            pairs.insert((hi.level(), lo.level()));
        }
    }
    assert_eq!(
        pairs.len(),
        15,
        "all fifteen pairs of the six sources are covered"
    );
    assert!(cases > 100, "{cases} cases");
}

#[test]
fn latest_command_wins_within_a_level() {
    for (a, b) in [
        (Vote::CodeStart, Vote::ApiStop),
        (Vote::ApiStop, Vote::CodeStart),
        (Vote::FlowStart, Vote::FlowStop),
        (Vote::FlowStop, Vote::FlowAgentOnly),
    ] {
        let p = run(a, b);
        assert_eq!(p.decision().recording, b.records(), "{a:?} then {b:?}");
    }
}

#[test]
fn do_not_record_policy_loses_to_a_flow_start_and_to_star_two() {
    let mut r = rules();
    Vote::DnrPolicy.configure(&mut r);
    let mut p = CallPolicy::new(&r, facts("c"));
    p.handle_event(Event::Answered);
    assert!(!p.decision().recording);
    p.handle_event(Event::Directive(FlowDirective::StartCallRecording));
    assert!(p.decision().recording);
    p.handle_event(Event::Directive(FlowDirective::StopCallRecording));
    assert!(!p.decision().recording);
    dial(&mut p, "*2", 0);
    assert!(p.decision().recording);
}
