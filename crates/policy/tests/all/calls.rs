//! Whole-call behaviour: consent, IVR segments, agent-only, pause, do-not-record directives,
//! statements, transfers, agent leaving, disposition, hang-up, and the decision log.

use policy::{
    ActionKind, CallPolicy, Consent, Direction, Event, FlowDirective, Mode, Reason,
    RecordingOptions, Side,
};

use crate::{dial, dial_side, directive, drain, facts, kinds, rules};

fn always() -> policy::Rules {
    let mut r = rules();
    r.stations.default.inbound_direct = Mode::Always;
    r.stations.default.inbound_ivr = Mode::Always;
    r.stations.default.outbound = Mode::Always;
    r
}

#[test]
fn consent_denied_blocks_star_two_api_and_flow_for_the_rest_of_the_call() {
    let mut p = CallPolicy::new(&always(), facts("c"));
    p.handle_event(Event::Consent(Consent::Denied));
    p.handle_event(Event::Answered);
    dial(&mut p, "*2", 0);
    p.handle_event(Event::ApiStart);
    directive(&mut p, FlowDirective::StartCallRecording);
    directive(&mut p, FlowDirective::AgentOnly);
    directive(&mut p, FlowDirective::StatementStart { id: "s".into() });
    p.handle_event(Event::Consent(Consent::Granted));
    dial(&mut p, "*2", 5_000);
    assert!(drain(&mut p).is_empty(), "no action at all");
    assert_eq!(p.decision().reason, Reason::ConsentDenied);
    assert!(p
        .explain()
        .iter()
        .any(|e| e.notes.iter().any(|n| n.contains("refusal is final"))));
}

#[test]
fn consent_denied_mid_call_stops_recording_and_statement() {
    let mut p = CallPolicy::new(&always(), facts("c"));
    p.handle_event(Event::Answered);
    directive(&mut p, FlowDirective::StatementStart { id: "t1".into() });
    assert_eq!(
        kinds(&drain(&mut p)),
        vec![
            ActionKind::Start,
            ActionKind::StatementStart { id: "t1".into() }
        ]
    );
    p.handle_event(Event::Consent(Consent::Denied));
    let a = drain(&mut p);
    assert_eq!(
        kinds(&a),
        vec![
            ActionKind::StatementStop { id: "t1".into() },
            ActionKind::Stop
        ]
    );
    assert!(a.iter().all(|x| x.reason == Reason::ConsentDenied));
    dial(&mut p, "*2", 0);
    assert!(drain(&mut p).is_empty());
}

#[test]
fn consent_granted_after_buffered_audio_discards_it() {
    let mut r = always();
    r.consent.required_for = vec![Direction::InboundIvr];
    let mut f = facts("c");
    f.direction = Direction::InboundIvr;
    let mut p = CallPolicy::new(&r, f);
    directive(&mut p, FlowDirective::StartIvrRecording);
    p.handle_event(Event::Answered);
    dial(&mut p, "*2", 0);
    assert!(
        drain(&mut p).is_empty(),
        "nothing written while consent is pending"
    );
    assert_eq!(p.decision().reason, Reason::ConsentPending);
    p.handle_event(Event::Consent(Consent::Granted));
    let a = drain(&mut p);
    assert_eq!(
        kinds(&a),
        vec![ActionKind::DiscardBuffered, ActionKind::Start],
        "earlier audio is dropped before the recording starts"
    );
    assert_eq!(a[0].reason, Reason::ConsentGranted);
    // A second answer changes nothing.
    p.handle_event(Event::Consent(Consent::Granted));
    assert!(drain(&mut p).is_empty());
}

#[test]
fn consent_denied_while_pending_discards_and_never_starts() {
    let mut r = always();
    r.consent.required_for = vec![Direction::InboundDirect];
    let mut p = CallPolicy::new(&r, facts("c"));
    p.handle_event(Event::Answered);
    p.handle_event(Event::Consent(Consent::Denied));
    assert_eq!(kinds(&drain(&mut p)), vec![ActionKind::DiscardBuffered]);
    p.handle_event(Event::ApiStart);
    p.handle_event(Event::HangUp);
    assert!(drain(&mut p).is_empty());
}

#[test]
fn consent_not_required_does_not_discard_and_other_directions_are_not_gated() {
    let mut r = always();
    r.consent.required_for = vec![Direction::InboundIvr];
    let mut p = CallPolicy::new(&r, facts("c")); // inbound_direct
    p.handle_event(Event::Answered);
    assert_eq!(kinds(&drain(&mut p)), vec![ActionKind::Start]);
    p.handle_event(Event::Consent(Consent::Granted));
    assert!(drain(&mut p).is_empty());
}

#[test]
fn ivr_segment_stops_at_answer_then_policy_decides() {
    // on_demand station: the IVR segment stops at the answer.
    let mut p = CallPolicy::new(&rules(), facts("c"));
    directive(&mut p, FlowDirective::StartIvrRecording);
    assert_eq!(kinds(&drain(&mut p)), vec![ActionKind::Start]);
    p.handle_event(Event::Answered);
    let a = drain(&mut p);
    assert_eq!(kinds(&a), vec![ActionKind::Stop]);
    assert_eq!(a[0].reason, Reason::AgentAnswered);
    directive(&mut p, FlowDirective::StartIvrRecording);
    assert!(drain(&mut p).is_empty(), "no IVR segment after the answer");

    // always station: one continuous recording, the reason changes to the station rule.
    let mut p = CallPolicy::new(&always(), facts("c"));
    directive(&mut p, FlowDirective::StartIvrRecording);
    p.handle_event(Event::Answered);
    assert_eq!(kinds(&drain(&mut p)), vec![ActionKind::Start]);
    assert!(matches!(p.decision().reason, Reason::StationRule { .. }));

    // Stopped by the flow before the answer.
    let mut p = CallPolicy::new(&rules(), facts("c"));
    directive(&mut p, FlowDirective::StartIvrRecording);
    directive(&mut p, FlowDirective::StopIvrRecording);
    assert_eq!(
        kinds(&drain(&mut p)),
        vec![ActionKind::Start, ActionKind::Stop]
    );
}

#[test]
fn call_directives_before_the_answer_apply_from_the_answer() {
    let mut p = CallPolicy::new(&rules(), facts("c"));
    directive(&mut p, FlowDirective::StartCallRecording);
    assert!(drain(&mut p).is_empty());
    p.handle_event(Event::Answered);
    assert_eq!(kinds(&drain(&mut p)), vec![ActionKind::Start]);
}

#[test]
fn agent_only_then_both() {
    let mut p = CallPolicy::new(&rules(), facts("c"));
    directive(&mut p, FlowDirective::AgentOnly);
    p.handle_event(Event::Answered);
    assert_eq!(
        kinds(&drain(&mut p)),
        vec![ActionKind::AgentOnly, ActionKind::Start],
        "the mode is set before any audio is written"
    );
    assert!(p.decision().agent_only);
    directive(&mut p, FlowDirective::StartCallRecording);
    assert_eq!(kinds(&drain(&mut p)), vec![ActionKind::Both]);
    assert!(!p.decision().agent_only);
}

#[test]
fn do_not_record_directive_is_sticky_for_flows_but_not_for_star_two() {
    let mut p = CallPolicy::new(&always(), facts("c"));
    directive(&mut p, FlowDirective::DoNotRecord);
    directive(&mut p, FlowDirective::StartIvrRecording);
    p.handle_event(Event::Answered);
    directive(&mut p, FlowDirective::StartCallRecording);
    directive(&mut p, FlowDirective::AgentOnly);
    assert!(drain(&mut p).is_empty());
    assert!(matches!(
        p.decision().reason,
        Reason::FlowDirective {
            directive: FlowDirective::DoNotRecord
        }
    ));
    dial(&mut p, "*2", 0);
    assert_eq!(kinds(&drain(&mut p)), vec![ActionKind::Start]);
}

#[test]
fn flow_pause_and_agent_resume_latest_wins() {
    let mut p = CallPolicy::new(&always(), facts("c"));
    p.handle_event(Event::Answered);
    directive(&mut p, FlowDirective::Pause);
    dial(&mut p, "*5", 0);
    p.handle_event(Event::ApiPause);
    directive(&mut p, FlowDirective::Resume);
    p.handle_event(Event::ApiResume);
    assert_eq!(
        kinds(&drain(&mut p)),
        vec![
            ActionKind::Start,
            ActionKind::Pause,
            ActionKind::Resume,
            ActionKind::Pause,
            ActionKind::Resume
        ]
    );
}

#[test]
fn statements_with_their_own_ids_several_per_call() {
    let mut p = CallPolicy::new(&rules(), facts("call-9"));
    p.handle_event(Event::Answered);
    directive(&mut p, FlowDirective::StatementStart { id: "terms".into() });
    assert_eq!(p.open_statement(), Some("terms"));
    directive(&mut p, FlowDirective::StatementStop);
    directive(&mut p, FlowDirective::StatementStart { id: String::new() });
    directive(&mut p, FlowDirective::StatementStart { id: "gdpr".into() });
    p.handle_event(Event::Transfer { external: false });
    directive(&mut p, FlowDirective::StatementStart { id: String::new() });
    directive(&mut p, FlowDirective::StatementStop);
    directive(&mut p, FlowDirective::StatementStop);
    directive(&mut p, FlowDirective::StatementStart { id: "last".into() });
    p.handle_event(Event::HangUp);
    let a = drain(&mut p);
    let s = |id: &str| ActionKind::StatementStart { id: id.into() };
    let e = |id: &str| ActionKind::StatementStop { id: id.into() };
    assert_eq!(
        kinds(&a),
        vec![
            s("terms"),
            e("terms"),
            s("call-9-statement-2"),
            e("call-9-statement-2"),
            s("gdpr"),
            e("gdpr"),
            s("call-9-statement-4"),
            e("call-9-statement-4"),
            s("last"),
            e("last"),
        ],
        "statements are independent of the call recording, which never started"
    );
    assert_eq!(a[5].reason, Reason::Transfer);
    assert_eq!(a[9].reason, Reason::HangUp);
}

#[test]
fn statements_wait_for_required_consent() {
    let mut r = rules();
    r.consent.required_for = vec![Direction::InboundDirect];
    let mut p = CallPolicy::new(&r, facts("c"));
    directive(&mut p, FlowDirective::StatementStart { id: "x".into() });
    assert!(drain(&mut p).is_empty());
    p.handle_event(Event::Consent(Consent::Granted));
    directive(&mut p, FlowDirective::StatementStart { id: "x".into() });
    assert_eq!(
        kinds(&drain(&mut p)),
        vec![
            ActionKind::DiscardBuffered,
            ActionKind::StatementStart { id: "x".into() }
        ]
    );
}

fn with_options(o: RecordingOptions) -> policy::Rules {
    let mut r = always();
    r.options = o;
    r
}

#[test]
fn external_transfer_stops_unless_kept() {
    let mut p = CallPolicy::new(&always(), facts("c"));
    p.handle_event(Event::Answered);
    dial(&mut p, "*2", 0);
    p.handle_event(Event::Transfer { external: false });
    assert!(
        p.decision().recording,
        "an internal transfer keeps recording"
    );
    p.handle_event(Event::Transfer { external: true });
    let a = drain(&mut p);
    assert_eq!(kinds(&a), vec![ActionKind::Start, ActionKind::Stop]);
    assert_eq!(a[1].reason, Reason::ExternalTransfer);
    // A new explicit start after the transfer records again.
    p.handle_event(Event::ApiStart);
    assert!(p.decision().recording);

    let kept = with_options(RecordingOptions {
        keep_after_external_transfer: true,
        ..RecordingOptions::default()
    });
    let mut p = CallPolicy::new(&kept, facts("c"));
    p.handle_event(Event::Answered);
    p.handle_event(Event::Transfer { external: true });
    assert!(p.decision().recording);
}

#[test]
fn agent_leaving_third_party_and_emergency_calls() {
    let third = RecordingOptions {
        keep_after_agent_leaves_third_party: true,
        ..RecordingOptions::default()
    };
    let emergency = RecordingOptions {
        keep_after_agent_leaves_emergency: true,
        ..RecordingOptions::default()
    };
    for (opts, is_third, is_emergency, kept) in [
        (RecordingOptions::default(), true, false, false),
        (RecordingOptions::default(), false, true, false),
        (third, true, false, true),
        (third, true, true, false),
        (emergency, false, true, true),
        (emergency, true, false, false),
    ] {
        let mut f = facts("c");
        f.is_third_party = is_third;
        f.is_emergency = is_emergency;
        let mut p = CallPolicy::new(&with_options(opts), f);
        p.handle_event(Event::Answered);
        p.handle_event(Event::AgentLeft {
            emergency: false,
            third_party: false,
        });
        let d = p.decision();
        assert_eq!(
            d.recording, kept,
            "{opts:?} third={is_third} emergency={is_emergency}"
        );
        if !kept {
            assert_eq!(
                d.reason,
                Reason::AgentLeft {
                    emergency: is_emergency,
                    third_party: is_third
                }
            );
        }
    }
}

#[test]
fn emergency_option_is_off_by_default() {
    let o = RecordingOptions::default();
    assert!(!o.keep_after_agent_leaves_emergency);
    assert!(!o.keep_after_agent_leaves_third_party);
    assert!(!o.keep_after_external_transfer);
    assert!(o.keep_after_disposition);
}

#[test]
fn options_come_from_the_selecting_record_policy() {
    let mut r = rules();
    r.record_policies.push(policy::RecordPolicy {
        name: "complaints".into(),
        percentage: 100,
        filter: policy::Filter::default(),
        options: Some(RecordingOptions {
            keep_after_external_transfer: true,
            ..RecordingOptions::default()
        }),
    });
    let mut p = CallPolicy::new(&r, facts("c"));
    assert!(p.options().keep_after_external_transfer);
    p.handle_event(Event::Answered);
    p.handle_event(Event::Transfer { external: true });
    assert!(p.decision().recording);
}

#[test]
fn disposition_option() {
    let mut p = CallPolicy::new(&always(), facts("c"));
    p.handle_event(Event::Answered);
    p.handle_event(Event::Disposition);
    assert!(p.decision().recording);
    let stop = with_options(RecordingOptions {
        keep_after_disposition: false,
        ..RecordingOptions::default()
    });
    let mut p = CallPolicy::new(&stop, facts("c"));
    p.handle_event(Event::Answered);
    p.handle_event(Event::Disposition);
    assert_eq!(p.decision().reason, Reason::Disposition);
    assert!(!p.decision().recording);
}

#[test]
fn nothing_after_hang_up() {
    let mut p = CallPolicy::new(&always(), facts("c"));
    p.handle_event(Event::Answered);
    p.handle_event(Event::HangUp);
    assert_eq!(
        kinds(&drain(&mut p)),
        vec![ActionKind::Start, ActionKind::Stop]
    );
    p.handle_event(Event::ApiStart);
    directive(&mut p, FlowDirective::StartCallRecording);
    assert_eq!(dial(&mut p, "*2", 0), "*2");
    assert!(drain(&mut p).is_empty());
}

#[test]
fn decision_log_explains_without_digits() {
    let mut r = always();
    r.record_policies.push(policy::RecordPolicy {
        name: "tenth".into(),
        percentage: 10,
        filter: policy::Filter::default(),
        options: None,
    });
    let mut p = CallPolicy::new(&r, facts("log-1"));
    directive(&mut p, FlowDirective::StartIvrRecording);
    dial_side(&mut p, "4111111111111111", 0, Side::Customer);
    p.handle_event(Event::Answered);
    dial(&mut p, "0987654321", 10_000);
    dial(&mut p, "*4", 20_000);
    dial(&mut p, "*5", 30_000);
    p.handle_event(Event::HangUp);
    let log = p.explain();
    let json = serde_json::to_string(log).unwrap();
    for secret in ["4111", "0987", "987654321"] {
        assert!(!json.contains(secret), "{secret} leaked into {json}");
    }
    assert_eq!(log[0].seq, 0);
    assert!(
        log[0].notes.iter().any(|n| n.contains("\"tenth\"")),
        "{:?}",
        log[0]
    );
    assert!(log
        .iter()
        .any(|e| e.notes.iter().any(|n| n == "feature code *4")));
    let last = log.last().unwrap();
    assert_eq!(last.event, "hang-up");
    assert_eq!(last.actions.len(), 1);
    assert!(last.decision.starts_with("not recording"));
    // Sequence numbers count every event, logged or not, so gaps show skipped digits.
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(last.seq, 1 + 16 + 1 + 10 + 2 + 2 + 1);
}

#[test]
fn actions_serialize_for_metadata() {
    let mut p = CallPolicy::new(&rules(), facts("c"));
    p.handle_event(Event::Answered);
    dial(&mut p, "*2", 0);
    let a = p.poll_action().unwrap();
    let v = serde_json::to_value(&a).unwrap();
    assert_eq!(v["kind"], "start");
    assert_eq!(v["reason"]["source"], "on_demand");
    assert_eq!(v["reason"]["command"], "start");
    assert_eq!(v["reason"]["via"], "feature_code");
    assert_eq!(v["reason"]["code"], "*2");
}
