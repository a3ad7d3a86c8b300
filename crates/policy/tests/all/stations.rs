//! The station × direction × mode matrix.

use policy::{
    ActionKind, CallPolicy, Direction, Event, Filter, Level, Mode, Reason, RecordPolicy, Rules,
    StationOverride,
};

use crate::{dial, drain, facts, kinds, rules};

const MODES: [Mode; 3] = [Mode::Never, Mode::Always, Mode::OnDemand];

/// A mode for the other two directions that differs from `mode`, so a wrong lookup shows.
fn other(mode: Mode) -> Mode {
    match mode {
        Mode::Always => Mode::Never,
        _ => Mode::Always,
    }
}

fn rules_for(station: &str, direction: Direction, mode: Mode) -> Rules {
    let mut r = rules();
    let o = Some(other(mode));
    let mut s = StationOverride {
        outbound: o,
        inbound_direct: o,
        inbound_ivr: o,
    };
    match direction {
        Direction::Outbound => s.outbound = Some(mode),
        Direction::InboundDirect => s.inbound_direct = Some(mode),
        Direction::InboundIvr => s.inbound_ivr = Some(mode),
    }
    r.stations.accounts.insert(station.into(), s);
    // The default would decide the opposite, so falling back to it by mistake shows too.
    r.stations.default.outbound = other(mode);
    r.stations.default.inbound_direct = other(mode);
    r.stations.default.inbound_ivr = other(mode);
    r
}

#[test]
fn every_station_direction_and_mode() {
    for direction in Direction::ALL {
        for mode in MODES {
            let r = rules_for("s1", direction, mode);
            r.validate().unwrap();
            let mut f = facts("m");
            f.direction = direction;
            let mut p = CallPolicy::new(&r, f);
            assert!(drain(&mut p).is_empty(), "nothing before the answer");
            p.handle_event(Event::Answered);
            let actions = drain(&mut p);
            let d = p.decision();
            let case = format!("{direction} {mode}");
            match mode {
                Mode::Always => {
                    assert_eq!(kinds(&actions), vec![ActionKind::Start], "{case}");
                    assert_eq!(d.reason.level(), Some(Level::Record), "{case}");
                }
                Mode::Never => {
                    assert!(actions.is_empty(), "{case}");
                    assert_eq!(d.reason.level(), Some(Level::StationNever), "{case}");
                }
                Mode::OnDemand => {
                    assert!(actions.is_empty(), "{case}");
                    assert_eq!(d.reason, Reason::NoRule, "{case}");
                }
            }
            assert_eq!(
                actions.first().map(|a| a.reason.clone()),
                (mode == Mode::Always).then(|| Reason::StationRule {
                    station: Some("s1".into()),
                    direction,
                    mode,
                }),
                "{case}"
            );
            // *2 records from now on, except on a `never` station, which is absolute.
            dial(&mut p, "*2", 5_000);
            assert_eq!(p.decision().recording, mode != Mode::Never, "{case}: *2");
            let after = kinds(&drain(&mut p));
            let expected = if mode == Mode::OnDemand {
                vec![ActionKind::Start]
            } else {
                vec![]
            };
            assert_eq!(after, expected, "{case}: *2 actions");
        }
    }
}

#[test]
fn unknown_station_uses_the_default_per_direction() {
    let mut r = rules();
    r.stations.default.outbound = Mode::Always;
    r.stations.default.inbound_direct = Mode::Never;
    r.stations.default.inbound_ivr = Mode::OnDemand;
    for (station, direction, recording) in [
        (Some("nobody"), Direction::Outbound, true),
        (None, Direction::Outbound, true),
        (Some("nobody"), Direction::InboundDirect, false),
        (None, Direction::InboundIvr, false),
    ] {
        let mut f = facts("d");
        f.station = station.map(str::to_owned);
        f.direction = direction;
        let mut p = CallPolicy::new(&r, f);
        p.handle_event(Event::Answered);
        assert_eq!(p.decision().recording, recording, "{station:?} {direction}");
    }
}

#[test]
fn record_policy_records_on_demand_stations_but_not_never_stations() {
    for (mode, recording) in [
        (Mode::OnDemand, true),
        (Mode::Never, false),
        (Mode::Always, true),
    ] {
        let mut r = rules_for("s1", Direction::InboundDirect, mode);
        r.record_policies.push(RecordPolicy {
            name: "everything".into(),
            percentage: 100,
            filter: Filter::default(),
            options: None,
        });
        let mut p = CallPolicy::new(&r, facts("x"));
        p.handle_event(Event::Answered);
        let d = p.decision();
        assert_eq!(d.recording, recording, "{mode}");
        if recording {
            assert_eq!(
                d.reason,
                Reason::RecordPolicy {
                    name: "everything".into(),
                    percentage: 100
                },
                "a policy is named before the station's always"
            );
        }
    }
}
