//! Percentage sampling: close to the configured share over 100,000 calls, and the same
//! decision on every rerun.

use policy::{sample, CallPolicy, Event, Filter, RecordPolicy, Rules};

use crate::facts;

const CALLS: usize = 100_000;

type IdShape = (&'static str, fn(usize) -> String);

fn share(percentage: u32, policy: &str, id: impl Fn(usize) -> String) -> f64 {
    let n = (0..CALLS)
        .filter(|&i| sample::selected(&id(i), policy, percentage))
        .count();
    100.0 * n as f64 / CALLS as f64
}

#[test]
fn shares_within_two_points_for_several_id_shapes() {
    let shapes: [IdShape; 3] = [
        ("sequential", |i| format!("call-{i}")),
        ("uuid-like", |i| {
            format!(
                "{:08x}-4b1d-9c3e-{:012x}",
                i * 2_654_435_761 % 4_294_967_291,
                i
            )
        }),
        ("numeric", |i| (1_700_000_000_000u64 + i as u64).to_string()),
    ];
    for (shape, id) in shapes {
        for pct in [0, 1, 5, 10, 20, 33, 50, 75, 90, 99, 100] {
            let got = share(pct, "quality", id);
            assert!(
                (got - f64::from(pct)).abs() <= 2.0,
                "{shape}: {pct} % configured, {got:.2} % sampled"
            );
        }
    }
}

#[test]
fn call_policy_samples_like_the_hash_and_reruns_decide_the_same() {
    let mut r = Rules::default();
    r.record_policies.push(RecordPolicy {
        name: "half".into(),
        percentage: 50,
        filter: Filter::default(),
        options: None,
    });
    let run = || -> Vec<bool> {
        (0..CALLS)
            .map(|i| {
                let mut p = CallPolicy::new(&r, facts(&format!("c{i}")));
                p.handle_event(Event::Answered);
                p.decision().recording
            })
            .collect()
    };
    let first = run();
    let recorded = first.iter().filter(|&&b| b).count();
    let pct = 100.0 * recorded as f64 / CALLS as f64;
    assert!((pct - 50.0).abs() <= 2.0, "{pct:.2} %");
    assert_eq!(first, run(), "a rerun decides every call the same way");
    for (i, &rec) in first.iter().enumerate().take(1000) {
        assert_eq!(rec, sample::selected(&format!("c{i}"), "half", 50));
    }
}

#[test]
fn nested_percentages_and_independent_policies() {
    // With the same policy name, 10 % is a subset of 50 %: raising a percentage only adds calls.
    for i in 0..10_000 {
        let id = format!("n{i}");
        if sample::selected(&id, "p", 10) {
            assert!(sample::selected(&id, "p", 50));
        }
    }
    // Two 50 % policies with different names overlap on about a quarter of calls.
    let both = (0..CALLS)
        .filter(|i| {
            let id = format!("i{i}");
            sample::selected(&id, "a", 50) && sample::selected(&id, "b", 50)
        })
        .count();
    let pct = 100.0 * both as f64 / CALLS as f64;
    assert!((pct - 25.0).abs() <= 2.0, "{pct:.2} %");
}
