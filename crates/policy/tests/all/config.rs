//! The rules file: the shipped example, defaults, unknown keys, and validation errors that
//! name the field at fault.

use policy::{CallPolicy, Direction, Event, Mode, PolicyError, Reason, Rules};

use crate::facts;

const EXAMPLE: &str = include_str!("../../../../config/policy.toml");

fn parse(text: &str) -> Result<Rules, toml::de::Error> {
    toml::from_str(text)
}

#[test]
fn shipped_example_loads_and_validates() {
    let r = parse(EXAMPLE).expect("config/policy.toml parses");
    r.validate().expect("config/policy.toml is valid");
    assert_eq!(r.feature_codes.start, "*2");
    assert_eq!(r.feature_codes.stop, "*3");
    assert!(!r.feature_codes.forward);
    assert_eq!(r.stations.default.inbound_ivr, Mode::Always);
    assert_eq!(
        r.stations.mode(Some("sales-1001"), Direction::Outbound),
        Mode::Always
    );
    assert_eq!(
        r.stations.mode(Some("sales-1001"), Direction::InboundIvr),
        Mode::Always,
        "unset directions fall back to the default"
    );
    assert_eq!(
        r.stations.mode(Some("board-2001"), Direction::InboundIvr),
        Mode::Never
    );
    assert_eq!(r.consent.required_for, vec![Direction::InboundIvr]);
    assert_eq!(r.record_policies.len(), 2);
    assert_eq!(r.record_policies[0].percentage, 20);
    assert!(r.record_policies[1]
        .options
        .is_some_and(|o| o.keep_after_agent_leaves_emergency));
    assert_eq!(r.do_not_record_policies[1].name, "doctors");

    // The example behaves as its comments say: a call to the doctors is not recorded.
    let mut f = facts("e");
    f.customer_number = "+3224770123".into();
    f.team = Some("other".into());
    let mut p = CallPolicy::new(&r, f);
    p.handle_event(Event::Answered);
    assert_eq!(
        p.decision().reason,
        Reason::DoNotRecordPolicy {
            name: "doctors".into()
        }
    );
}

#[test]
fn empty_file_gives_defaults() {
    let r = parse("").unwrap();
    r.validate().unwrap();
    assert_eq!(r.feature_codes.start, "*2");
    assert_eq!(r.feature_codes.inter_digit_timeout_ms, 2000);
    for d in Direction::ALL {
        assert_eq!(r.stations.mode(None, d), Mode::OnDemand);
    }
    assert!(r.direction.queue_means_ivr);
    assert!(r.options.keep_after_disposition);
}

#[test]
fn unknown_keys_are_rejected_and_named() {
    for (text, key) in [
        ("recrod_policies = []", "recrod_policies"),
        (
            "[feature_codes]\nstart = \"*2\"\nforward_codes = true",
            "forward_codes",
        ),
        ("[stations.default]\ninbound = \"always\"", "inbound"),
        (
            "[stations.accounts.\"1001\"]\noutbund = \"never\"",
            "outbund",
        ),
        ("[[record_policies]]\nname = \"a\"\npercent = 5", "percent"),
        (
            "[[record_policies]]\nname = \"a\"\n[record_policies.filter]\nteam = [\"x\"]",
            "team",
        ),
        (
            "[[record_policies]]\nname = \"a\"\n[record_policies.options]\nkeep_emergency = true",
            "keep_emergency",
        ),
        (
            "[[do_not_record_policies]]\nname = \"a\"\nfilters = {}",
            "filters",
        ),
        ("[consent]\nrequired = true", "required"),
        ("[direction]\nivr_headers = []", "ivr_headers"),
    ] {
        let err = parse(text).expect_err(key).to_string();
        assert!(
            err.contains(&format!("unknown field `{key}`")),
            "{key}: {err}"
        );
    }
}

#[test]
fn bad_values_are_rejected_by_serde() {
    assert!(parse("[stations.default]\noutbound = \"sometimes\"").is_err());
    assert!(parse("[consent]\nrequired_for = [\"inbound\"]").is_err());
    assert!(
        parse("[[record_policies]]\npercentage = 5").is_err(),
        "name is required"
    );
    assert!(parse("[[record_policies]]\nname = \"a\"\npercentage = -5").is_err());
}

fn invalid(text: &str) -> PolicyError {
    parse(text).expect("parses").validate().expect_err(text)
}

#[test]
fn validation_names_the_bad_field() {
    let e = invalid(
        "[[record_policies]]\nname = \"ok\"\n[[record_policies]]\nname = \"big\"\npercentage = 150",
    );
    assert_eq!(
        e,
        PolicyError::PercentageOutOfRange {
            field: "record_policies[1].percentage".into(),
            value: 150
        }
    );
    assert_eq!(
        e.to_string(),
        "record_policies[1].percentage: percentage 150 is outside 0..=100"
    );

    let cases = [
        ("[feature_codes]\nstop = \"*21\"", "feature_codes.start"),
        ("[feature_codes]\npause = \"*2\"", "feature_codes.start"),
        ("[feature_codes]\nstop = \"#1\"\nresume = \"#\"", "feature_codes.stop"),
        ("[feature_codes]\nstop = \"*x\"", "feature_codes.stop"),
        ("[feature_codes]\nresume = \"123456789\"", "feature_codes.resume"),
        ("[feature_codes]\ninter_digit_timeout_ms = 0", "feature_codes.inter_digit_timeout_ms"),
        ("[[record_policies]]\nname = \" \"", "record_policies[0].name"),
        (
            "[[do_not_record_policies]]\nname = \"a\"\n[[do_not_record_policies]]\nname = \"a\"",
            "do_not_record_policies[1].name",
        ),
        (
            "[[do_not_record_policies]]\nname = \"a\"\n[do_not_record_policies.filter]\ncustomer_numbers = [\"+32*\", \"\"]",
            "do_not_record_policies[0].filter.customer_numbers[1]",
        ),
        ("[direction]\nivr_numbers = [\"\"]", "direction.ivr_numbers[0]"),
    ];
    for (text, field) in cases {
        let e = invalid(text);
        assert_eq!(e.field(), Some(field), "{text}: {e}");
        assert!(e.to_string().starts_with(field), "{e}");
    }
}

#[test]
fn same_name_in_record_and_do_not_record_lists_is_allowed() {
    let r =
        parse("[[record_policies]]\nname = \"vip\"\n[[do_not_record_policies]]\nname = \"vip\"")
            .unwrap();
    r.validate().unwrap();
}
