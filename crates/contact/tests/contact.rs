//! The contact core on a virtual clock: route modes against consent, `never` stations against
//! `*2`, transfers with and without overlap, the options, statements, dispositions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use b2bua::Leg;
use contact::{ApiCommand, CallStart, Config, Contacts, Input, Output};
use policy::{Mode, RecordingOptions, Rules, StationOverride};
use recorder::{Command, Format, RecordingMetadata};

fn start(call: u64, contact: &str, mode: Option<Mode>, rules: &Rules) -> Input {
    Input::Started(Box::new(CallStart {
        call,
        contact_id: contact.into(),
        continues: false,
        customer: Leg::A,
        route: "pbx".into(),
        route_mode: mode,
        format: Format::Wav,
        rules: Arc::new(rules.clone()),
        source_zone: None,
        station: Some("agent".into()),
        agent_user: None,
        customer_number: "5551234".into(),
        dialled_number: "100".into(),
        x_headers: Vec::new(),
        meta: RecordingMetadata::default(),
    }))
}

fn with_headers(i: Input, h: &[(&str, &str)]) -> Input {
    match i {
        Input::Started(mut s) => {
            s.x_headers = h
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            Input::Started(s)
        }
        other => other,
    }
}

fn continuing(call: u64, contact: &str, rules: &Rules) -> Input {
    match start(call, contact, None, rules) {
        Input::Started(mut s) => {
            s.continues = true;
            Input::Started(s)
        }
        other => other,
    }
}

fn drain(c: &mut Contacts) -> Vec<Output> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

fn commands(out: &[Output]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Command { command, .. } => Some(match command {
                Command::Start { .. } => "start",
                Command::Stop { .. } => "stop",
                Command::Pause { .. } => "pause",
                Command::Resume { .. } => "resume",
                Command::AgentOnly { .. } => "agent-only",
                Command::BothChannels { .. } => "both",
                Command::DiscardBuffered { .. } => "discard",
            }),
            _ => None,
        })
        .collect()
}

fn finish(out: &[Output]) -> Option<(bool, String, Vec<u64>)> {
    out.iter().find_map(|o| match o {
        Output::Finish {
            recorded,
            reason,
            calls,
            ..
        } => Some((*recorded, reason.clone(), calls.clone())),
        _ => None,
    })
}

fn info_digit(call: u64, leg: Leg, d: char) -> Input {
    Input::InDialog {
        call,
        leg,
        x_headers: Vec::new(),
        content_type: "application/dtmf-relay".into(),
        body: format!("Signal={d}\r\nDuration=160\r\n").into_bytes(),
    }
}

#[test]
fn consent_refusal_beats_a_route_that_always_records() {
    let t0 = Instant::now();
    let mut c = Contacts::new(Config::default());
    let rules = Rules::default();
    c.handle_input(
        t0,
        with_headers(
            start(1, "c1", Some(Mode::Always), &rules),
            &[("X-Tapir-Consent", "denied")],
        ),
    );
    c.handle_input(t0, Input::Answered { call: 1 });
    c.handle_input(t0, info_digit(1, Leg::B, '*'));
    c.handle_input(t0, info_digit(1, Leg::B, '2'));
    c.handle_api(t0, 1, ApiCommand::Start).unwrap();
    c.handle_input(t0 + Duration::from_secs(5), Input::Ended { call: 1 });
    let out = drain(&mut c);
    assert!(commands(&out).is_empty(), "{out:#?}");
    let (recorded, reason, _) = finish(&out).expect("finished");
    assert!(!recorded);
    assert_eq!(reason, "the caller refused consent");
}

#[test]
fn the_same_route_records_without_a_refusal() {
    let t0 = Instant::now();
    let mut c = Contacts::new(Config::default());
    c.handle_input(t0, start(1, "c1", Some(Mode::Always), &Rules::default()));
    c.handle_input(t0, Input::Answered { call: 1 });
    c.handle_input(t0, Input::Ended { call: 1 });
    let out = drain(&mut c);
    assert_eq!(commands(&out), ["start", "stop"]);
    let (recorded, reason, _) = finish(&out).unwrap();
    assert!(recorded);
    assert_eq!(reason, "record policy \"route pbx\" (100 %)");
}

#[test]
fn a_never_station_is_not_recorded_by_star_two_a_policy_or_a_flow() {
    let t0 = Instant::now();
    let mut rules = Rules::default();
    rules.stations.accounts.insert(
        "agent".into(),
        StationOverride {
            inbound_direct: Some(Mode::Never),
            ..Default::default()
        },
    );
    rules.record_policies.push(policy::RecordPolicy {
        name: "all".into(),
        percentage: 100,
        filter: Default::default(),
        options: None,
    });
    let mut c = Contacts::new(Config::default());
    c.handle_input(
        t0,
        with_headers(
            start(1, "c1", None, &rules),
            &[("X-Tapir-Record", "statement-start;id=terms")],
        ),
    );
    c.handle_input(t0, Input::Answered { call: 1 });
    c.handle_input(t0, info_digit(1, Leg::B, '*'));
    c.handle_input(t0, info_digit(1, Leg::B, '2'));
    c.handle_api(
        t0,
        1,
        ApiCommand::Directive(policy::FlowDirective::StartCallRecording),
    )
    .unwrap();
    assert_eq!(c.route(1, Leg::A), None, "no track, so no packet is kept");
    c.handle_input(t0, Input::Ended { call: 1 });
    let out = drain(&mut c);
    assert!(
        !out.iter().any(|o| matches!(
            o,
            Output::Open { .. } | Output::Command { .. } | Output::StatementOpen { .. }
        )),
        "{out:#?}"
    );
    let (recorded, reason, _) = finish(&out).unwrap();
    assert!(!recorded);
    assert_eq!(reason, "station agent inbound_direct mode never");
    // The decision is kept even though nothing was recorded.
    let meta = out.iter().find_map(|o| match o {
        Output::Finish { meta, .. } => meta.clone(),
        _ => None,
    });
    assert_eq!(meta.unwrap().station.as_deref(), Some("agent"));
}

#[test]
fn on_demand_star_two_records_and_the_route_never_mode_blocks_it() {
    for (mode, expected) in [
        (Mode::OnDemand, vec!["start", "stop"]),
        (Mode::Never, vec![]),
    ] {
        let t0 = Instant::now();
        let mut c = Contacts::new(Config::default());
        c.handle_input(t0, start(1, "c1", Some(mode), &Rules::default()));
        c.handle_input(t0, Input::Answered { call: 1 });
        c.handle_input(t0, info_digit(1, Leg::B, '*'));
        c.handle_input(t0, info_digit(1, Leg::B, '2'));
        c.handle_input(t0, Input::Ended { call: 1 });
        assert_eq!(commands(&drain(&mut c)), expected, "{mode}");
    }
}

#[test]
fn customer_digits_are_no_feature_code() {
    let t0 = Instant::now();
    let mut c = Contacts::new(Config::default());
    c.handle_input(t0, start(1, "c1", Some(Mode::OnDemand), &Rules::default()));
    c.handle_input(t0, Input::Answered { call: 1 });
    c.handle_input(t0, info_digit(1, Leg::A, '*'));
    c.handle_input(t0, info_digit(1, Leg::A, '2'));
    assert!(commands(&drain(&mut c)).is_empty());
}

#[test]
fn consent_granted_discards_what_was_held() {
    let t0 = Instant::now();
    let mut rules = Rules::default();
    rules.consent.required_for = vec![policy::Direction::InboundDirect];
    let mut c = Contacts::new(Config::default());
    c.handle_input(t0, start(1, "c1", Some(Mode::Always), &rules));
    c.handle_input(t0, Input::Answered { call: 1 });
    assert!(commands(&drain(&mut c)).is_empty(), "consent pending");
    c.handle_input(
        t0,
        Input::Consent {
            call: 1,
            consent: policy::Consent::Granted,
        },
    );
    assert_eq!(commands(&drain(&mut c)), ["discard", "start"]);
}

/// A blind transfer whose transferor hangs up before the transferee's INVITE arrives.
#[test]
fn a_transfer_without_overlap_is_one_contact_within_the_grace_window() {
    let t0 = Instant::now();
    let rules = Rules::default();
    let mut c = Contacts::new(Config {
        transfer_grace: Duration::from_secs(10),
    });
    c.handle_input(t0, start(1, "c1", Some(Mode::Always), &rules));
    c.handle_input(t0, Input::Answered { call: 1 });
    c.handle_input(
        t0,
        Input::TransferStarted {
            call: 1,
            external: false,
            attended: false,
            target: "200".into(),
        },
    );
    c.handle_input(t0 + Duration::from_secs(1), Input::Ended { call: 1 });
    c.handle_timeout(t0 + Duration::from_secs(3));
    let waiting = drain(&mut c);
    assert!(finish(&waiting).is_none(), "waits for the transferee");
    assert_eq!(
        commands(&waiting),
        ["start", "stop"],
        "the wait is left out"
    );
    c.handle_input(t0 + Duration::from_secs(4), continuing(2, "c1", &rules));
    c.handle_input(t0 + Duration::from_secs(4), Input::Answered { call: 2 });
    let out = drain(&mut c);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Open { .. })),
        "no second file"
    );
    assert_eq!(
        commands(&out),
        ["start"],
        "the transferred call is a segment of its own"
    );
    assert!(c.route(2, Leg::A).is_some());
    c.handle_timeout(t0 + Duration::from_secs(20));
    assert!(
        finish(&drain(&mut c)).is_none(),
        "the grace window ended with the join"
    );
    c.handle_input(t0 + Duration::from_secs(30), Input::Ended { call: 2 });
    let (recorded, _, calls) = finish(&drain(&mut c)).unwrap();
    assert!(recorded);
    assert_eq!(calls, [1, 2]);
    assert!(c.is_empty());
}

#[test]
fn a_transfer_that_never_arrives_finishes_at_the_end_of_the_grace_window() {
    let t0 = Instant::now();
    let mut c = Contacts::new(Config {
        transfer_grace: Duration::from_secs(10),
    });
    c.handle_input(t0, start(1, "c1", Some(Mode::Always), &Rules::default()));
    c.handle_input(
        t0,
        Input::TransferStarted {
            call: 1,
            external: false,
            attended: false,
            target: "200".into(),
        },
    );
    c.handle_input(t0, Input::Ended { call: 1 });
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    c.handle_timeout(t0 + Duration::from_secs(9));
    assert!(finish(&drain(&mut c)).is_none());
    c.handle_timeout(t0 + Duration::from_secs(10));
    assert!(finish(&drain(&mut c)).is_some());
    // A call continuing it later is a contact of its own again.
    c.handle_input(
        t0 + Duration::from_secs(11),
        continuing(2, "c1", &Rules::default()),
    );
    assert!(drain(&mut c)
        .iter()
        .any(|o| matches!(o, Output::Open { .. })));
}

/// A REFER the transferee refuses: no transferred call will come, so the hang-up that
/// follows finishes the contact at once, with the refusal in the decision log.
#[test]
fn a_refused_transfer_does_not_wait_for_a_transferred_call() {
    let t0 = Instant::now();
    let mut c = Contacts::new(Config {
        transfer_grace: Duration::from_secs(10),
    });
    c.handle_input(t0, start(1, "c1", Some(Mode::Always), &Rules::default()));
    c.handle_input(
        t0,
        Input::TransferStarted {
            call: 1,
            external: false,
            attended: false,
            target: "200".into(),
        },
    );
    c.handle_input(
        t0,
        Input::TransferFailed {
            call: 1,
            status: 603,
        },
    );
    // Another report of the same failure changes nothing.
    c.handle_input(
        t0,
        Input::TransferFailed {
            call: 1,
            status: 603,
        },
    );
    c.handle_input(t0 + Duration::from_secs(1), Input::Ended { call: 1 });
    let out = drain(&mut c);
    assert!(finish(&out).is_some(), "{out:#?}");
    assert_eq!(c.poll_timeout(), None);
    let log = out
        .iter()
        .find_map(|o| match o {
            Output::Finish { decisions, .. } => Some(format!("{decisions:?}")),
            _ => None,
        })
        .unwrap();
    assert!(log.contains("the REFER came to 603"), "{log}");
    assert!(c.is_empty());
}

/// A REFER that fails after the last hang-up (it timed out, 408): the contact waiting out
/// its grace window finishes then, not at the window's end.
#[test]
fn a_transfer_failing_during_the_grace_window_finishes_the_contact_then() {
    let t0 = Instant::now();
    let mut c = Contacts::new(Config {
        transfer_grace: Duration::from_secs(30),
    });
    c.handle_input(t0, start(1, "c1", Some(Mode::Always), &Rules::default()));
    c.handle_input(
        t0,
        Input::TransferStarted {
            call: 1,
            external: false,
            attended: false,
            target: "200".into(),
        },
    );
    c.handle_input(t0, Input::Ended { call: 1 });
    assert!(finish(&drain(&mut c)).is_none());
    // An unrelated call's failure is not this contact's.
    c.handle_input(
        t0,
        Input::TransferFailed {
            call: 9,
            status: 408,
        },
    );
    assert!(finish(&drain(&mut c)).is_none());
    c.handle_input(
        t0 + Duration::from_secs(2),
        Input::TransferFailed {
            call: 1,
            status: 408,
        },
    );
    assert!(finish(&drain(&mut c)).is_some());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn a_call_ending_without_a_pending_transfer_finishes_at_once() {
    let t0 = Instant::now();
    let mut c = Contacts::new(Config::default());
    c.handle_input(t0, start(1, "c1", Some(Mode::Always), &Rules::default()));
    c.handle_input(t0, Input::Ended { call: 1 });
    assert!(finish(&drain(&mut c)).is_some());
}

/// Every option on and off, with the transfer kind that fires it.
#[test]
fn the_options_decide_what_a_transfer_or_the_agent_leaving_does() {
    #[derive(Debug, Clone, Copy)]
    enum Kind {
        BlindExternal,
        AttendedExternal,
        AttendedEmergency,
        Internal,
    }
    for kind in [
        Kind::BlindExternal,
        Kind::AttendedExternal,
        Kind::AttendedEmergency,
        Kind::Internal,
    ] {
        for keep in [false, true] {
            let rules = Rules {
                emergency_numbers: vec!["112".into()],
                options: RecordingOptions {
                    keep_after_external_transfer: keep,
                    keep_after_agent_leaves_third_party: keep,
                    keep_after_agent_leaves_emergency: keep,
                    keep_after_disposition: true,
                },
                ..Rules::default()
            };
            let (external, attended, target) = match kind {
                Kind::BlindExternal => (true, false, "5550000"),
                Kind::AttendedExternal => (true, true, "5550000"),
                Kind::AttendedEmergency => (false, true, "112"),
                Kind::Internal => (false, false, "200"),
            };
            let t0 = Instant::now();
            let mut c = Contacts::new(Config::default());
            c.handle_input(t0, start(1, "c1", Some(Mode::Always), &rules));
            c.handle_input(t0, Input::Answered { call: 1 });
            c.handle_input(
                t0,
                Input::TransferStarted {
                    call: 1,
                    external,
                    attended,
                    target: target.into(),
                },
            );
            c.handle_input(t0, continuing(2, "c1", &rules));
            c.handle_input(t0, Input::Ended { call: 1 });
            let got = commands(&drain(&mut c));
            let stops = matches!(kind, Kind::Internal) || keep;
            let expected: &[&str] = if stops {
                &["start"]
            } else {
                &["start", "stop"]
            };
            assert_eq!(got, expected, "{kind:?} keep={keep}");
        }
    }
}

#[test]
fn a_disposition_header_ends_the_recording_unless_kept() {
    for (keep, expected) in [(true, vec!["start"]), (false, vec!["start", "stop"])] {
        let mut rules = Rules::default();
        rules.options.keep_after_disposition = keep;
        let t0 = Instant::now();
        let mut c = Contacts::new(Config::default());
        c.handle_input(t0, start(1, "c1", Some(Mode::Always), &rules));
        c.handle_input(t0, Input::Answered { call: 1 });
        c.handle_input(
            t0,
            Input::InDialog {
                call: 1,
                leg: Leg::B,
                x_headers: vec![("X-Tapir-Disposition".into(), "sale".into())],
                content_type: String::new(),
                body: Vec::new(),
            },
        );
        assert_eq!(commands(&drain(&mut c)), expected, "keep={keep}");
    }
}

#[test]
fn a_statement_without_an_id_is_named_once_after_its_contact() {
    let t0 = Instant::now();
    let mut c = Contacts::new(Config::default());
    c.handle_input(t0, start(1, "c1", Some(Mode::OnDemand), &Rules::default()));
    c.handle_input(t0, Input::Answered { call: 1 });
    for d in ["statement-start", "statement-start;id=terms"] {
        c.handle_api(
            t0,
            1,
            ApiCommand::Directive(policy::parse_record_header(d).unwrap().remove(0)),
        )
        .unwrap();
    }
    let stems: Vec<String> = drain(&mut c)
        .into_iter()
        .filter_map(|o| match o {
            Output::StatementOpen { stem, .. } => Some(stem),
            _ => None,
        })
        .collect();
    assert_eq!(stems, ["c1-statement-1", "c1-statement-terms"]);
}

#[test]
fn pause_and_resume_by_feature_code() {
    let mut rules = Rules::default();
    rules.feature_codes.pause = "*4".into();
    rules.feature_codes.resume = "*5".into();
    let t0 = Instant::now();
    let mut c = Contacts::new(Config::default());
    c.handle_input(t0, start(1, "c1", Some(Mode::Always), &rules));
    c.handle_input(t0, Input::Answered { call: 1 });
    for d in ['*', '4', '*', '5'] {
        c.handle_input(t0, info_digit(1, Leg::B, d));
    }
    assert_eq!(commands(&drain(&mut c)), ["start", "pause", "resume"]);
}

#[test]
fn malformed_headers_change_nothing_and_are_in_the_decision_log() {
    let t0 = Instant::now();
    let mut c = Contacts::new(Config::default());
    c.handle_input(
        t0,
        with_headers(
            start(1, "c1", Some(Mode::Always), &Rules::default()),
            &[("X-Tapir-Consent", "maybe"), ("X-Tapir-Record", "sta rt")],
        ),
    );
    c.handle_input(t0, Input::Answered { call: 1 });
    c.handle_input(t0, Input::Ended { call: 1 });
    let out = drain(&mut c);
    assert_eq!(commands(&out), ["start", "stop"]);
    let log = out
        .iter()
        .find_map(|o| match o {
            Output::Finish { decisions, .. } => Some(decisions.to_string()),
            _ => None,
        })
        .unwrap();
    assert!(log.contains("ignored X-Tapir-Record"), "{log}");
    assert!(log.contains("X-Tapir-Consent"), "{log}");
}

#[test]
fn an_api_command_for_an_unknown_call_is_an_error() {
    let mut c = Contacts::new(Config::default());
    assert!(c.handle_api(Instant::now(), 9, ApiCommand::Start).is_err());
}

#[test]
fn the_decision_log_is_journaled_as_it_grows() {
    let t0 = Instant::now();
    let mut c = Contacts::new(Config::default());
    c.handle_input(t0, start(1, "c1", Some(Mode::Always), &Rules::default()));
    let first = drain(&mut c);
    assert!(first.iter().any(|o| matches!(o, Output::Journal { .. })));
    c.handle_input(t0, Input::Answered { call: 1 });
    let out = drain(&mut c);
    assert!(
        matches!(out.last(), Some(Output::Journal { .. })),
        "{out:#?}"
    );
}

/// A transfer to a station that is never recorded: nothing of it is taken, and nothing
/// starts again for the contact.
#[test]
fn a_transfer_to_a_never_station_stops_the_recording_for_good() {
    let mut rules = Rules::default();
    rules.stations.accounts.insert(
        "private".into(),
        StationOverride {
            inbound_direct: Some(Mode::Never),
            ..Default::default()
        },
    );
    let t0 = Instant::now();
    let mut c = Contacts::new(Config::default());
    c.handle_input(t0, start(1, "c1", Some(Mode::Always), &rules));
    c.handle_input(t0, Input::Answered { call: 1 });
    let mut to_private = continuing(2, "c1", &rules);
    if let Input::Started(s) = &mut to_private {
        s.station = Some("private".into());
    }
    c.handle_input(t0, to_private);
    c.handle_input(t0, Input::Ended { call: 1 });
    assert_eq!(
        c.route(2, Leg::B),
        None,
        "the never station's audio is not taken"
    );
    c.handle_api(t0, 2, ApiCommand::Start).unwrap();
    c.handle_input(t0, Input::Ended { call: 2 });
    assert_eq!(commands(&drain(&mut c)), ["start", "stop"]);
}

#[test]
fn the_registered_account_beats_an_invite_header_naming_another_station() {
    let mut rules = Rules::default();
    rules.stations.default.inbound_direct = Mode::Always;
    rules.stations.accounts.insert(
        "agent".into(),
        StationOverride {
            inbound_direct: Some(Mode::Never),
            ..Default::default()
        },
    );
    let t0 = Instant::now();
    let mut c = Contacts::new(Config::default());
    c.handle_input(
        t0,
        with_headers(
            start(1, "c1", None, &rules),
            &[("X-Tapir-Station", "someone-else")],
        ),
    );
    c.handle_input(t0, Input::Answered { call: 1 });
    c.handle_input(t0, Input::Ended { call: 1 });
    let (recorded, reason, _) = finish(&drain(&mut c)).unwrap();
    assert!(!recorded);
    assert_eq!(reason, "station agent inbound_direct mode never");
}

#[test]
fn the_api_both_leaves_agent_only_without_starting_a_recording() {
    let t0 = Instant::now();
    let mut c = Contacts::new(Config::default());
    c.handle_input(t0, start(1, "c1", Some(Mode::OnDemand), &Rules::default()));
    c.handle_input(t0, Input::Answered { call: 1 });
    c.handle_api(t0, 1, ApiCommand::Both).unwrap();
    assert!(commands(&drain(&mut c)).is_empty());
    c.handle_api(t0, 1, ApiCommand::AgentOnly).unwrap();
    c.handle_api(t0, 1, ApiCommand::Both).unwrap();
    assert_eq!(commands(&drain(&mut c)), ["agent-only", "start", "both"]);
}

#[test]
fn the_contact_is_answered_by_whichever_of_its_calls_answers_first() {
    let t0 = Instant::now();
    let rules = Rules::default();
    let mut c = Contacts::new(Config::default());
    c.handle_input(t0, start(1, "c1", Some(Mode::Always), &rules));
    // A pickup replaces the ringing call, which is then cancelled.
    c.handle_input(t0, continuing(2, "c1", &rules));
    c.handle_input(t0, Input::Ended { call: 1 });
    c.handle_input(t0, Input::Answered { call: 2 });
    c.handle_input(t0, Input::Answered { call: 2 });
    assert_eq!(commands(&drain(&mut c)), ["start"]);
}
