//! Every policy filter, alone and combined, for record and do-not-record policies.

use policy::{
    CallFacts, CallPolicy, Direction, DoNotRecordPolicy, Event, Filter, Reason, RecordPolicy, Rules,
};

use crate::facts;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// For each filter field: a filter, a call it matches, and calls it must not match.
fn cases() -> Vec<(&'static str, Filter, CallFacts, Vec<CallFacts>)> {
    let base = facts("f");
    let with = |f: fn(&mut CallFacts)| {
        let mut c = facts("f");
        f(&mut c);
        c
    };
    vec![
        (
            "agents",
            Filter {
                agents: s(&["bob", "alice"]),
                ..Filter::default()
            },
            base.clone(),
            vec![
                with(|c| c.agent = Some("carol".into())),
                with(|c| c.agent = None),
            ],
        ),
        (
            "teams",
            Filter {
                teams: s(&["support"]),
                ..Filter::default()
            },
            base.clone(),
            vec![
                with(|c| c.team = Some("sales".into())),
                with(|c| c.team = None),
            ],
        ),
        (
            "skills",
            Filter {
                skills: s(&["french"]),
                ..Filter::default()
            },
            base.clone(),
            vec![
                with(|c| c.skill = Some("dutch".into())),
                with(|c| c.skill = None),
            ],
        ),
        (
            "queues",
            Filter {
                queues: s(&["general"]),
                ..Filter::default()
            },
            base.clone(),
            vec![
                with(|c| c.queue = Some("vip".into())),
                with(|c| c.queue = None),
            ],
        ),
        (
            "routes",
            Filter {
                routes: s(&["main"]),
                ..Filter::default()
            },
            base.clone(),
            vec![
                with(|c| c.route = Some("backup".into())),
                with(|c| c.route = None),
            ],
        ),
        (
            "directions",
            Filter {
                directions: vec![Direction::InboundDirect, Direction::Outbound],
                ..Filter::default()
            },
            base.clone(),
            vec![with(|c| c.direction = Direction::InboundIvr)],
        ),
        (
            "stations",
            Filter {
                stations: s(&["s1"]),
                ..Filter::default()
            },
            base.clone(),
            vec![
                with(|c| c.station = Some("s2".into())),
                with(|c| c.station = None),
            ],
        ),
        (
            "customer_numbers prefix",
            Filter {
                customer_numbers: s(&["+32470*"]),
                ..Filter::default()
            },
            base.clone(),
            vec![with(|c| c.customer_number = "+32471123456".into())],
        ),
        (
            "customer_numbers pattern",
            Filter {
                customer_numbers: s(&["+32470XXXXXX"]),
                ..Filter::default()
            },
            base.clone(),
            vec![
                with(|c| c.customer_number = "+324701234567".into()),
                with(|c| c.customer_number = "+3247012345".into()),
            ],
        ),
        (
            "dialled_numbers",
            Filter {
                dialled_numbers: s(&["+3222000*", "112"]),
                ..Filter::default()
            },
            base.clone(),
            vec![with(|c| c.dialled_number = "+3222001100".into())],
        ),
    ]
}

fn recorded(r: &Rules, f: &CallFacts) -> (bool, Reason) {
    let mut p = CallPolicy::new(r, f.clone());
    p.handle_event(Event::Answered);
    let d = p.decision();
    (d.recording, d.reason)
}

#[test]
fn every_filter_in_record_policies() {
    for (field, filter, yes, nos) in cases() {
        let mut r = Rules::default();
        r.record_policies.push(RecordPolicy {
            name: field.into(),
            percentage: 100,
            filter,
            options: None,
        });
        r.validate().unwrap();
        assert!(recorded(&r, &yes).0, "{field} should match");
        for no in nos {
            assert_eq!(
                recorded(&r, &no),
                (false, Reason::NoRule),
                "{field}: {no:?}"
            );
        }
    }
}

#[test]
fn every_filter_in_do_not_record_policies() {
    for (field, filter, yes, nos) in cases() {
        let mut r = Rules::default();
        r.stations.default.inbound_direct = policy::Mode::Always;
        r.stations.default.inbound_ivr = policy::Mode::Always;
        r.stations.default.outbound = policy::Mode::Always;
        r.do_not_record_policies.push(DoNotRecordPolicy {
            name: field.into(),
            filter,
        });
        r.validate().unwrap();
        assert_eq!(
            recorded(&r, &yes),
            (false, Reason::DoNotRecordPolicy { name: field.into() }),
            "{field}"
        );
        for no in nos {
            assert!(recorded(&r, &no).0, "{field}: {no:?} must not be blocked");
        }
    }
}

#[test]
fn lists_are_anded_entries_ored_and_empty_matches_all() {
    let f = Filter {
        teams: s(&["support", "sales"]),
        directions: vec![Direction::InboundDirect],
        ..Filter::default()
    };
    let mut c = facts("a");
    assert!(f.matches(&c));
    c.team = Some("sales".into());
    assert!(f.matches(&c), "any team of the list");
    c.direction = Direction::Outbound;
    assert!(!f.matches(&c), "every list must match");
    assert!(Filter::default().matches(&CallFacts::default()));
}

#[test]
fn first_matching_policy_names_the_reason() {
    let mut r = Rules::default();
    for (name, team) in [
        ("sales-only", "sales"),
        ("support-a", "support"),
        ("support-b", "support"),
    ] {
        r.record_policies.push(RecordPolicy {
            name: name.into(),
            percentage: 100,
            filter: Filter {
                teams: s(&[team]),
                ..Filter::default()
            },
            options: None,
        });
    }
    assert_eq!(
        recorded(&r, &facts("z")).1,
        Reason::RecordPolicy {
            name: "support-a".into(),
            percentage: 100
        }
    );
}
