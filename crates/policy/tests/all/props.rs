//! Properties over random event sequences: the action stream is always consistent, consent
//! refusal is final, and no agent digit is lost.

use policy::{ActionKind, CallPolicy, Consent, Direction, Event, FlowDirective, Mode, Rules, Side};
use proptest::prelude::*;

use crate::{facts, rules};

fn event() -> impl Strategy<Value = Event> {
    let directive = prop_oneof![
        Just(FlowDirective::StartIvrRecording),
        Just(FlowDirective::StopIvrRecording),
        Just(FlowDirective::StartCallRecording),
        Just(FlowDirective::StopCallRecording),
        Just(FlowDirective::AgentOnly),
        Just(FlowDirective::DoNotRecord),
        Just(FlowDirective::Pause),
        Just(FlowDirective::Resume),
        "[a-c]{0,2}".prop_map(|id| FlowDirective::StatementStart { id }),
        Just(FlowDirective::StatementStop),
    ];
    prop_oneof![
        Just(Event::Answered),
        (
            prop::sample::select(vec!['*', '2', '3', '4', '5', '1', '#']),
            any::<bool>(),
            0u64..20_000
        )
            .prop_map(|(digit, agent, at_ms)| Event::Dtmf {
                digit,
                side: if agent { Side::Agent } else { Side::Customer },
                at_ms
            }),
        (0u64..20_000).prop_map(|at_ms| Event::Tick { at_ms }),
        directive.prop_map(Event::Directive),
        Just(Event::Consent(Consent::Granted)),
        Just(Event::Consent(Consent::Denied)),
        Just(Event::ApiStart),
        Just(Event::ApiStop),
        Just(Event::ApiPause),
        Just(Event::ApiResume),
        any::<bool>().prop_map(|external| Event::Transfer { external }),
        Just(Event::AgentLeft {
            emergency: false,
            third_party: true,
        }),
        Just(Event::Disposition),
        Just(Event::HangUp),
    ]
}

fn rules_variant(mode: Mode, consent: bool) -> Rules {
    let mut r = rules();
    r.stations.default.inbound_direct = mode;
    if consent {
        r.consent.required_for = vec![Direction::InboundDirect];
    }
    r
}

proptest! {
    #[test]
    fn action_stream_is_consistent(
        events in prop::collection::vec(event(), 0..60),
        mode in prop::sample::select(vec![Mode::Never, Mode::Always, Mode::OnDemand]),
        consent in any::<bool>(),
    ) {
        let mut p = CallPolicy::new(&rules_variant(mode, consent), facts("prop"));
        let (mut on, mut paused, mut statement) = (false, false, None::<String>);
        let mut denied = false;
        for e in events.iter().cloned().chain([Event::HangUp]) {
            if e == Event::Consent(Consent::Denied) {
                denied = true;
            }
            p.handle_event(e);
            while let Some(a) = p.poll_action() {
                match a.kind {
                    ActionKind::Start => {
                        prop_assert!(!on && !denied);
                        on = true;
                    }
                    ActionKind::Stop => {
                        prop_assert!(on);
                        on = false;
                        paused = false;
                    }
                    ActionKind::Pause => {
                        prop_assert!(on && !paused);
                        paused = true;
                    }
                    ActionKind::Resume => {
                        prop_assert!(on && paused);
                        paused = false;
                    }
                    ActionKind::StatementStart { id } => {
                        prop_assert!(statement.is_none() && !denied);
                        prop_assert!(!id.is_empty());
                        statement = Some(id);
                    }
                    ActionKind::StatementStop { id } => {
                        prop_assert_eq!(statement.take(), Some(id));
                    }
                    ActionKind::AgentOnly | ActionKind::Both | ActionKind::DiscardBuffered => {}
                }
            }
            prop_assert_eq!(p.decision().recording, on);
        }
        prop_assert!(!on, "hang-up stops the recording");
        prop_assert!(statement.is_none(), "hang-up closes the statement");
        prop_assert_eq!(p.explain().last().map(|e| e.event.as_str()), Some("hang-up"));
    }

    #[test]
    fn no_agent_digit_is_lost(
        digits in prop::collection::vec(
            (prop::sample::select(vec!['*', '2', '3', '4', '9', '#']), 0u64..3_000),
            0..40,
        ),
    ) {
        let mut p = CallPolicy::new(&rules(), facts("digits"));
        let mut t = 0;
        let (mut sent, mut forwarded) = (String::new(), String::new());
        for (d, gap) in digits {
            t += gap;
            sent.push(d);
            let h = p.handle_event(Event::Dtmf { digit: d, side: Side::Agent, at_ms: t });
            forwarded.extend(h.forward_digits());
        }
        let h = p.handle_event(Event::Tick { at_ms: t + 2_000 });
        forwarded.extend(h.forward_digits());
        prop_assert!(!p.holding_digits());
        // Every digit sent was either forwarded, in order, or part of a feature code.
        let codes: usize = p
            .explain()
            .iter()
            .flat_map(|e| &e.notes)
            .filter(|n| n.starts_with("feature code "))
            .count();
        prop_assert_eq!(forwarded.len() + 2 * codes, sent.len());
        let mut rest = sent.chars();
        for c in forwarded.chars() {
            prop_assert!(rest.any(|s| s == c), "forwarded digits keep their order");
        }
    }
}
