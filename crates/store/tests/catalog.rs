//! Every catalog operation against SQLite (a file in a temporary directory) and a real
//! PostgreSQL (a throw-away cluster, see `common/pg.rs`). Each case is one async function
//! taking a fresh, empty catalog; the macro at the end runs it on both backends.

mod common;

use std::collections::HashSet;

use recorder::{Segment, SegmentKind};
use serde_json::json;
use store::{Catalog, DeleteOutcome, Entry, Query, Sort, State, Statement, StoreError};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_700_000_000_000;

fn entry(id: &str, start: i64) -> Entry {
    let meta = recorder::RecordingMetadata {
        contact_id: id.into(),
        call_id_customer: Some(format!("{id}-a@carrier")),
        call_id_agent: Some(format!("{id}-b@pbx")),
        from: "+4930111".into(),
        to: "201".into(),
        station: Some("201".into()),
        route: "pbx".into(),
        direction: "inbound".into(),
        start_unix_ms: start as u64,
        end_unix_ms: Some(start as u64 + 60_000),
        duration_ms: 60_000,
        call_duration_ms: 61_000,
        codecs_customer: vec!["PCMA".into()],
        codecs_agent: vec!["PCMU".into(), "telephone-event".into()],
        segments: vec![Segment {
            kind: SegmentKind::Full,
            start_frame: 0,
            end_frame: Some(480_000),
            call_start_ms: 0,
            call_end_ms: Some(60_000),
            start_reason: "route".into(),
            end_reason: Some("call ended".into()),
        }],
        decisions: Some(json!([{"rule": "always", "why": "route pbx"}])),
        ..Default::default()
    };
    Entry::from_metadata(&meta, "node-a", State::Finished, start).unwrap()
}

fn statement(id: &str, contact: &str, sid: &str, start: i64) -> Statement {
    let meta = recorder::RecordingMetadata {
        contact_id: contact.into(),
        statement_id: Some(sid.into()),
        start_unix_ms: start as u64,
        duration_ms: 5_000,
        ..Default::default()
    };
    Statement::from_metadata(&meta, id, State::Finished, start).unwrap()
}

async fn upsert_and_get_keep_every_field(c: Catalog) {
    let mut e = entry("c1", T0);
    e.agent = Some("anna".into());
    e.team = Some("complaints".into());
    e.queue = Some("q-complaints".into());
    e.skill = Some("german".into());
    e.answer_ms = Some(T0 + 1500);
    e.error = Some("disk full".into());
    e.counters.lost_agent = 12;
    e = e.with_retention(Some(90));
    c.upsert(&e).await.unwrap();
    let got = c.get("c1").await.unwrap().expect("entry");
    assert_eq!(got, e);
    assert_eq!(c.get("nope").await.unwrap(), None);
    assert_eq!(c.count().await.unwrap(), 1);
    // A refresh replaces the facts.
    e.duration_ms = 70_000;
    e.agent = Some("bert".into());
    c.upsert(&e).await.unwrap();
    assert_eq!(c.get("c1").await.unwrap().unwrap(), e);
    assert_eq!(c.count().await.unwrap(), 1);
}

async fn a_late_refresh_never_undoes_the_life_of_the_file(c: Catalog) {
    let e = entry("c1", T0);
    c.upsert(&e).await.unwrap();
    assert!(c
        .mark_stored("c1", "2023/11/14/c1.wav", 1000, "ab", T0 + 1)
        .await
        .unwrap());
    assert!(c.set_legal_hold("c1", true, T0 + 2).await.unwrap());
    // The finisher's copy of the facts (state finished, no key) arrives late.
    c.upsert(&e).await.unwrap();
    let got = c.get("c1").await.unwrap().unwrap();
    assert_eq!(got.state, State::Stored);
    assert_eq!(got.storage_key.as_deref(), Some("2023/11/14/c1.wav"));
    assert_eq!(got.size_bytes, Some(1000));
    assert_eq!(got.sha256.as_deref(), Some("ab"));
    assert!(got.legal_hold);
    // Setting a file on a stored entry is refused.
    assert!(!c
        .set_file("c1", State::Finished, 5, "cd", T0 + 3)
        .await
        .unwrap());
}

async fn either_call_id_finds_the_contact(c: Catalog) {
    c.upsert(&entry("c1", T0)).await.unwrap();
    c.upsert(&entry("c2", T0 + 1)).await.unwrap();
    assert_eq!(
        c.by_call_id("c1-a@carrier")
            .await
            .unwrap()
            .unwrap()
            .contact_id,
        "c1"
    );
    assert_eq!(
        c.by_call_id("c2-b@pbx").await.unwrap().unwrap().contact_id,
        "c2"
    );
    assert!(c.by_call_id("c3-a@carrier").await.unwrap().is_none());
}

async fn statements_are_rows_of_their_own(c: Catalog) {
    c.upsert(&entry("c1", T0)).await.unwrap();
    c.upsert(&entry("c2", T0 + 10)).await.unwrap();
    assert!(!c.get("c1").await.unwrap().unwrap().has_statement);
    c.upsert_statement(&statement("c1-statement-terms", "c1", "terms", T0 + 5))
        .await
        .unwrap();
    c.upsert_statement(&statement("c1-statement-terms-2", "c1", "terms", T0 + 7))
        .await
        .unwrap();
    c.upsert_statement(&statement("c2-statement-card", "c2", "card", T0 + 12))
        .await
        .unwrap();
    let e = c.get("c1").await.unwrap().unwrap();
    assert!(e.has_statement);
    let ids: Vec<&str> = e.statements.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["c1-statement-terms", "c1-statement-terms-2"]);
    let terms = c.statements_by_id("terms").await.unwrap();
    assert_eq!(terms.len(), 2);
    assert!(terms.iter().all(|s| s.contact_id == "c1"));
    assert_eq!(
        c.statements_by_id("card").await.unwrap()[0].contact_id,
        "c2"
    );
    assert!(c.statements_by_id("nope").await.unwrap().is_empty());
    // A contact refreshed after its statements keeps the flag.
    c.upsert(&entry("c1", T0)).await.unwrap();
    assert!(c.get("c1").await.unwrap().unwrap().has_statement);
    // A statement reaching storage.
    assert!(c
        .set_statement_file("c1-statement-terms", State::Finished, 80_044, "aa", T0 + 20)
        .await
        .unwrap());
    let pending = c
        .statements_by_node_state("node-a", State::Finished, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 3);
    assert!(c
        .mark_statement_stored(
            "c1-statement-terms",
            "2023/11/14/c1-statement-terms.wav",
            80_044,
            "aa",
            T0 + 21
        )
        .await
        .unwrap());
    let s = &c.statements_by_id("terms").await.unwrap()[0];
    assert_eq!(s.state, State::Stored);
    assert_eq!(
        s.storage_key.as_deref(),
        Some("2023/11/14/c1-statement-terms.wav")
    );
    assert_eq!(s.size_bytes, Some(80_044));
    assert_eq!(
        c.statements_by_node_state("node-a", State::Finished, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(!c
        .mark_statement_stored("nope", "k", 1, "a", 0)
        .await
        .unwrap());
}

async fn the_journal_says_what_a_node_must_resume(c: Catalog) {
    let mut a = entry("c1", T0);
    a.state = State::Recording;
    c.upsert(&a).await.unwrap();
    let mut b = entry("c2", T0 + 1);
    b.node = "node-b".into();
    c.upsert(&b).await.unwrap();
    c.upsert(&entry("c3", T0 + 2)).await.unwrap();
    let rec = c
        .by_node_state("node-a", State::Recording, 10)
        .await
        .unwrap();
    assert_eq!(
        rec.iter()
            .map(|e| e.contact_id.as_str())
            .collect::<Vec<_>>(),
        ["c1"]
    );
    assert!(c
        .set_file("c1", State::Interrupted, 4096, "ff00", T0 + 5)
        .await
        .unwrap());
    let e = c.get("c1").await.unwrap().unwrap();
    assert_eq!(
        (e.state, e.size_bytes, e.sha256.as_deref()),
        (State::Interrupted, Some(4096), Some("ff00"))
    );
    assert_eq!(
        c.by_node_state("node-a", State::Finished, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        c.by_node_state("node-b", State::Finished, 10)
            .await
            .unwrap()[0]
            .contact_id,
        "c2"
    );
    assert!(c
        .mark_stored("c1", "k/c1.wav", 4096, "ff00", T0 + 6)
        .await
        .unwrap());
    assert!(c
        .by_node_state("node-a", State::Interrupted, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(c.set_state("c3", State::Interrupted, T0 + 7).await.unwrap());
    assert!(!c
        .set_state("nope", State::Interrupted, T0 + 7)
        .await
        .unwrap());
    assert_eq!(
        c.by_node_state("node-a", State::Interrupted, 10)
            .await
            .unwrap()[0]
            .contact_id,
        "c3"
    );
}

/// Varied entries for the search cases: what each filter must and must not find.
fn population() -> Vec<Entry> {
    let agents = ["anna", "bert", "carl"];
    let teams = ["complaints", "sales"];
    let queues = ["q1", "q2", "q3"];
    let numbers = ["+4930111", "+4930222", "+4940333", "+3312345", "0800"];
    (0..60)
        .map(|i: i64| {
            let mut e = entry(&format!("c{i:03}"), T0 + (i % 20) * DAY + i * 1000);
            e.agent = (i % 7 != 0).then(|| agents[(i % 3) as usize].to_string());
            e.team = Some(teams[(i % 2) as usize].to_string());
            e.queue = Some(queues[(i % 3) as usize].to_string());
            e.direction = if i % 4 == 0 { "outbound" } else { "inbound" }.into();
            e.customer_number = Some(numbers[(i % 5) as usize].to_string());
            // Equal durations in groups, so the contact id breaks ties.
            e.duration_ms = (i % 10) * 30_000;
            e.state = if i % 6 == 0 {
                State::Stored
            } else {
                State::Finished
            };
            e
        })
        .collect()
}

fn oracle(all: &[Entry], q: &Query, deleted: &HashSet<String>) -> Vec<String> {
    let mut v: Vec<&Entry> = all
        .iter()
        .filter(|e| q.from_ms.is_none_or(|f| e.start_ms >= f))
        .filter(|e| q.to_ms.is_none_or(|t| e.start_ms < t))
        .filter(|e| q.agent.is_none() || e.agent == q.agent)
        .filter(|e| q.team.is_none() || e.team == q.team)
        .filter(|e| q.queue.is_none() || e.queue == q.queue)
        .filter(|e| q.direction.as_ref().is_none_or(|d| &e.direction == d))
        .filter(|e| {
            q.customer_prefix.as_ref().is_none_or(|p| {
                e.customer_number
                    .as_ref()
                    .is_some_and(|n| n.starts_with(p.as_str()))
            })
        })
        .filter(|e| q.min_duration_ms.is_none_or(|d| e.duration_ms >= d))
        .filter(|e| q.max_duration_ms.is_none_or(|d| e.duration_ms <= d))
        .filter(|e| q.has_statement.is_none_or(|h| e.has_statement == h))
        .filter(|e| q.state.is_none_or(|s| e.state == s))
        .filter(|e| {
            q.include_deleted || q.state == Some(State::Deleted) || !deleted.contains(&e.contact_id)
        })
        .collect();
    let key = |e: &Entry| match q.sort {
        Sort::StartAsc | Sort::StartDesc => e.start_ms,
        Sort::DurationAsc | Sort::DurationDesc => e.duration_ms,
    };
    v.sort_by(|a, b| (key(a), &a.contact_id).cmp(&(key(b), &b.contact_id)));
    if matches!(q.sort, Sort::StartDesc | Sort::DurationDesc) {
        v.reverse();
    }
    v.into_iter().map(|e| e.contact_id.clone()).collect()
}

/// Reads every page of `q` and checks each page's size.
async fn all_pages(c: &Catalog, q: &Query) -> Vec<String> {
    let mut q = q.clone();
    let mut out = Vec::new();
    for _ in 0..200 {
        let page = c.search(&q).await.unwrap();
        assert!(page.entries.len() <= q.limit.max(1) as usize);
        out.extend(page.entries.iter().map(|e| e.contact_id.clone()));
        match page.next {
            Some(n) => q.cursor = Some(n),
            None => return out,
        }
    }
    panic!("paging does not end");
}

async fn every_filter_and_sort_finds_what_it_should(c: Catalog) {
    let mut all = population();
    c.upsert_many(&all).await.unwrap();
    for i in [3, 10, 11] {
        let id = format!("c{i:03}");
        c.upsert_statement(&statement(&format!("{id}-statement-x"), &id, "x", T0))
            .await
            .unwrap();
        all[i].has_statement = true;
    }
    let mut deleted = HashSet::new();
    // c006 is stored: a search by state leaves it out once it is soft-deleted.
    for id in ["c005", "c006"] {
        assert_eq!(c.soft_delete(id, T0).await.unwrap(), DeleteOutcome::Deleted);
        deleted.insert(id.to_string());
    }
    let base = Query {
        limit: 7,
        ..Default::default()
    };
    let mut queries = vec![base.clone()];
    let with = |f: &dyn Fn(&mut Query)| {
        let mut q = base.clone();
        f(&mut q);
        q
    };
    queries.push(with(&|q| {
        q.from_ms = Some(T0 + 3 * DAY);
        q.to_ms = Some(T0 + 9 * DAY);
    }));
    queries.push(with(&|q| q.agent = Some("anna".into())));
    queries.push(with(&|q| q.team = Some("sales".into())));
    queries.push(with(&|q| q.queue = Some("q2".into())));
    queries.push(with(&|q| q.direction = Some("outbound".into())));
    queries.push(with(&|q| q.customer_prefix = Some("+4930".into())));
    queries.push(with(&|q| q.customer_prefix = Some("+49".into())));
    queries.push(with(&|q| q.customer_prefix = Some("+5".into())));
    queries.push(with(&|q| q.min_duration_ms = Some(90_000)));
    queries.push(with(&|q| {
        q.min_duration_ms = Some(60_000);
        q.max_duration_ms = Some(120_000);
    }));
    queries.push(with(&|q| q.has_statement = Some(true)));
    queries.push(with(&|q| q.has_statement = Some(false)));
    queries.push(with(&|q| q.state = Some(State::Stored)));
    queries.push(with(&|q| q.include_deleted = true));
    queries.push(with(&|q| {
        q.agent = Some("bert".into());
        q.direction = Some("inbound".into());
        q.min_duration_ms = Some(30_000);
        q.from_ms = Some(T0 + DAY);
    }));
    queries.push(with(&|q| q.agent = Some("nobody".into())));
    let mut nonempty = 0;
    for q in &queries {
        for sort in [
            Sort::StartAsc,
            Sort::StartDesc,
            Sort::DurationAsc,
            Sort::DurationDesc,
        ] {
            let q = Query { sort, ..q.clone() };
            let want = oracle(&all, &q, &deleted);
            nonempty += usize::from(!want.is_empty());
            assert_eq!(all_pages(&c, &q).await, want, "{q:?}");
        }
    }
    assert!(nonempty > 50, "the population exercises the filters");
    // Search results carry the entry, not its statements.
    let page = c
        .search(&with(&|q| q.has_statement = Some(true)))
        .await
        .unwrap();
    assert!(page
        .entries
        .iter()
        .all(|e| e.has_statement && e.statements.is_empty()));
}

async fn paging_survives_inserts_and_refuses_bad_cursors(c: Catalog) {
    c.upsert_many(&population()).await.unwrap();
    let q = Query {
        limit: 10,
        sort: Sort::StartAsc,
        ..Default::default()
    };
    let first = c.search(&q).await.unwrap();
    assert_eq!(first.entries.len(), 10);
    // A row inserted before the cursor's position does not shift the next page.
    c.upsert(&entry("a-early", T0 - DAY)).await.unwrap();
    let next = c
        .search(&Query {
            cursor: first.next.clone(),
            ..q.clone()
        })
        .await
        .unwrap();
    let all = all_pages(&c, &q).await;
    assert_eq!(all[0], "a-early");
    let ids: Vec<_> = next.entries.iter().map(|e| e.contact_id.clone()).collect();
    assert_eq!(ids, all[11..21]);
    for (cursor, sort) in [
        ("zz", Sort::StartAsc),
        (first.next.as_deref().unwrap(), Sort::StartDesc),
    ] {
        let r = c
            .search(&Query {
                cursor: Some(cursor.into()),
                sort,
                ..Default::default()
            })
            .await;
        assert!(
            matches!(
                r,
                Err(StoreError::BadQuery {
                    param: "cursor",
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let r = c
        .search(&Query {
            limit: 5000,
            ..Default::default()
        })
        .await;
    assert!(matches!(
        r,
        Err(StoreError::BadQuery { param: "limit", .. })
    ));
}

async fn soft_delete_hides_and_a_hold_refuses(c: Catalog) {
    for (i, id) in ["c1", "c2", "c3"].into_iter().enumerate() {
        c.upsert(&entry(id, T0 + i as i64)).await.unwrap();
    }
    assert!(c.set_legal_hold("c2", true, T0).await.unwrap());
    assert!(!c.set_legal_hold("nope", true, T0).await.unwrap());
    assert_eq!(
        c.soft_delete("c1", T0 + 10).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert_eq!(
        c.soft_delete("c1", T0 + 11).await.unwrap(),
        DeleteOutcome::AlreadyDeleted
    );
    assert_eq!(
        c.soft_delete("c2", T0 + 10).await.unwrap(),
        DeleteOutcome::Held
    );
    assert_eq!(
        c.soft_delete("nope", T0 + 10).await.unwrap(),
        DeleteOutcome::NotFound
    );
    assert_eq!(
        c.get("c1").await.unwrap().unwrap().deleted_at_ms,
        Some(T0 + 10)
    );
    assert!(c.get("c2").await.unwrap().unwrap().deleted_at_ms.is_none());
    let visible: Vec<_> = c
        .search(&Query::default())
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.contact_id)
        .collect();
    assert_eq!(visible, ["c3", "c2"]);
    let q = Query {
        include_deleted: true,
        ..Default::default()
    };
    assert_eq!(c.search(&q).await.unwrap().entries.len(), 3);
    // Releasing the hold allows the delete.
    assert!(c.set_legal_hold("c2", false, T0 + 20).await.unwrap());
    assert_eq!(
        c.soft_delete("c2", T0 + 21).await.unwrap(),
        DeleteOutcome::Deleted
    );
}

async fn retention_purges_only_what_it_should(c: Catalog) {
    let now = T0 + 100 * DAY;
    let old = |id: &str| entry(id, T0).with_retention(Some(30));
    c.upsert(&old("expired")).await.unwrap();
    c.upsert(&old("expired-held")).await.unwrap();
    c.set_legal_hold("expired-held", true, now).await.unwrap();
    c.upsert(&entry("young", now - DAY).with_retention(Some(30)))
        .await
        .unwrap();
    c.upsert(&entry("forever", T0)).await.unwrap();
    c.upsert(&entry("deleted", now - DAY)).await.unwrap();
    c.soft_delete("deleted", now - 1).await.unwrap();
    let mut rec = old("still-recording");
    rec.state = State::Recording;
    c.upsert(&rec).await.unwrap();
    c.upsert_statement(&statement("expired-statement-s", "expired", "s", T0))
        .await
        .unwrap();
    c.mark_statement_stored("expired-statement-s", "k/s.wav", 1, "a", T0)
        .await
        .unwrap();

    let cands = c.purge_candidates(now, 100).await.unwrap();
    let ids: Vec<_> = cands.iter().map(|e| e.contact_id.as_str()).collect();
    assert_eq!(ids, ["deleted", "expired"]);
    // Candidates carry their statements, whose audio goes too.
    assert_eq!(cands[1].statements.len(), 1);
    // Just before the end of retention only the soft-deleted one is a candidate.
    let early = c.purge_candidates(T0 + 30 * DAY - 1, 100).await.unwrap();
    assert_eq!(
        early
            .iter()
            .map(|e| e.contact_id.as_str())
            .collect::<Vec<_>>(),
        ["deleted"]
    );
    assert_eq!(c.purge_candidates(now, 1).await.unwrap().len(), 1);

    assert!(c.mark_purged("expired", now).await.unwrap());
    assert!(!c.mark_purged("expired", now).await.unwrap(), "purged once");
    assert!(
        !c.mark_purged("expired-held", now).await.unwrap(),
        "a hold wins"
    );
    let e = c.get("expired").await.unwrap().unwrap();
    assert_eq!(e.state, State::Deleted);
    assert_eq!(e.purged_at_ms, Some(now));
    assert_eq!(e.statements[0].state, State::Deleted);
    let held = c.get("expired-held").await.unwrap().unwrap();
    assert_eq!(held.state, State::Finished);
    assert!(held.purged_at_ms.is_none());
    let ids: Vec<_> = c
        .purge_candidates(now, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.contact_id)
        .collect();
    assert_eq!(ids, ["deleted"]);
}

async fn the_outbox_delivers_until_acknowledged(c: Catalog) {
    let a = c
        .enqueue_webhook(
            "http://127.0.0.1:9/hook",
            "recording.stored",
            &json!({"contact_id": "c1"}),
            T0,
        )
        .await
        .unwrap();
    let b = c
        .enqueue_webhook(
            "http://127.0.0.1:9/hook",
            "recording.stored",
            &json!({"contact_id": "c2"}),
            T0 + 1,
        )
        .await
        .unwrap();
    assert_ne!(a, b);
    assert_eq!(c.pending_webhooks().await.unwrap(), 2);
    // Nothing is due before it was queued.
    assert!(c.claim_webhooks(T0 - 1, 1000, 10).await.unwrap().is_empty());
    let claimed = c.claim_webhooks(T0 + 1, 30_000, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|d| d.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(claimed[0].attempts, 1);
    assert_eq!(claimed[0].payload, json!({"contact_id": "c1"}));
    assert_eq!(claimed[0].event, "recording.stored");
    // Leased: not handed out again until the lease ends.
    assert!(c
        .claim_webhooks(T0 + 2, 30_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(c
        .webhook_failed(a, T0 + 5_000, "connection refused")
        .await
        .unwrap());
    assert!(c.webhook_delivered(b, T0 + 3).await.unwrap());
    assert!(
        !c.webhook_delivered(b, T0 + 4).await.unwrap(),
        "acknowledged once"
    );
    assert_eq!(c.pending_webhooks().await.unwrap(), 1);
    let again = c.claim_webhooks(T0 + 5_000, 30_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (a, 2));
    assert_eq!(again[0].last_error.as_deref(), Some("connection refused"));
    // A node that dies holding a claim: the lease runs out and the delivery is due again.
    let expired = c.claim_webhooks(T0 + 35_001, 30_000, 10).await.unwrap();
    assert_eq!((expired[0].id, expired[0].attempts), (a, 3));
    assert!(c.webhook_delivered(a, T0 + 36_000).await.unwrap());
    assert_eq!(c.pending_webhooks().await.unwrap(), 0);
    let d = c.webhook(a).await.unwrap().unwrap();
    assert_eq!(d.delivered_ms, Some(T0 + 36_000));
    assert!(d.last_error.is_none());
    assert!(c.webhook(9999).await.unwrap().is_none());
}

async fn concurrent_claims_never_hand_out_a_delivery_twice(c: Catalog) {
    for i in 0..40 {
        c.enqueue_webhook("http://127.0.0.1:9/h", "e", &json!({ "i": i }), T0)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let got = c.claim_webhooks(T0, 60_000, 3).await.unwrap();
                if got.is_empty() {
                    return ids;
                }
                ids.extend(got.into_iter().map(|d| d.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 40);
    assert_eq!(unique.len(), 40);
}

/// Copies the backend's migrations and adds one that fails half-way.
async fn broken_migrator(backend: &str) -> (tempfile::TempDir, sqlx::migrate::Migrator) {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for f in std::fs::read_dir(src).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    std::fs::write(
        dir.path().join("0099_broken.sql"),
        "CREATE TABLE broken_probe (x INTEGER);\n\
         ALTER TABLE recordings ADD COLUMN broken_col INTEGER;\n\
         SELECT no_such_function();\n",
    )
    .unwrap();
    let m = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    (dir, m)
}

async fn a_failing_migration_leaves_the_schema_usable(c: Catalog) {
    c.upsert(&entry("c1", T0)).await.unwrap();
    let (_dir, m) = broken_migrator(c.backend()).await;
    let err = c.apply_migrations(&m).await.unwrap_err();
    assert!(matches!(err, StoreError::Migrate { .. }), "{err}");
    // Everything still works on the previous schema...
    c.upsert(&entry("c2", T0 + 1)).await.unwrap();
    assert_eq!(c.search(&Query::default()).await.unwrap().entries.len(), 2);
    assert!(c.get("c1").await.unwrap().is_some());
    // ...and nothing of the failed migration stayed: applying it fails the same way, not
    // on a table or column that already exists.
    let again = c.apply_migrations(&m).await.unwrap_err().to_string();
    assert!(again.contains("no_such_function"), "{again}");
}

/// More matches than the SQLite planner's duration probe counts (5000), so both of its plans
/// (duration index, start index) are checked against the oracle.
async fn wide_and_rare_duration_ranges_page_alike(c: Catalog) {
    let all: Vec<Entry> = (0..6000i64)
        .map(|i| {
            let mut e = entry(&format!("d{i:05}"), T0 + (i * 7919) % 6000 * 1000);
            e.duration_ms = (i % 100) * 1000;
            e
        })
        .collect();
    c.upsert_many(&all).await.unwrap();
    let none = HashSet::new();
    for (min, max) in [
        (0, 99_000),
        (10_000, 90_000),
        (5_000, 5_000),
        (200_000, 300_000),
    ] {
        for sort in [Sort::StartDesc, Sort::StartAsc, Sort::DurationAsc] {
            let q = Query {
                min_duration_ms: Some(min),
                max_duration_ms: Some(max),
                sort,
                limit: 1000,
                ..Default::default()
            };
            assert_eq!(all_pages(&c, &q).await, oracle(&all, &q, &none), "{q:?}");
        }
    }
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("tapir.db").display());
                    let c = store::Catalog::open(&url).await.unwrap();
                    super::$case(c.clone()).await;
                    c.close().await;
                }
            )*
        }

        /// One cluster for all cases; each case gets a database of its own.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres_all_cases() {
            let Some(pg) = common::pg::PgCluster::start() else { return };
            $(
                let url = pg.create_db(stringify!($case)).await;
                let c = Catalog::open(&url).await.unwrap();
                eprintln!("postgres: {}", stringify!($case));
                $case(c.clone()).await;
                c.close().await;
            )*
        }
    };
}

cases!(
    upsert_and_get_keep_every_field,
    a_late_refresh_never_undoes_the_life_of_the_file,
    either_call_id_finds_the_contact,
    statements_are_rows_of_their_own,
    the_journal_says_what_a_node_must_resume,
    every_filter_and_sort_finds_what_it_should,
    paging_survives_inserts_and_refuses_bad_cursors,
    soft_delete_hides_and_a_hold_refuses,
    retention_purges_only_what_it_should,
    the_outbox_delivers_until_acknowledged,
    concurrent_claims_never_hand_out_a_delivery_twice,
    a_failing_migration_leaves_the_schema_usable,
    wide_and_rare_duration_ranges_page_alike,
);

#[tokio::test]
async fn sqlite_is_created_in_wal_mode_and_reopens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("tapir.db");
    let c = Catalog::open(path.to_str().unwrap()).await.unwrap();
    assert!(path.exists());
    assert_eq!(c.backend(), "sqlite");
    assert_eq!(
        c.sqlite_journal_mode().await.unwrap().as_deref(),
        Some("wal")
    );
    c.upsert(&entry("c1", T0)).await.unwrap();
    c.enqueue_webhook("http://127.0.0.1:9/h", "e", &json!({}), T0)
        .await
        .unwrap();
    c.close().await;
    // A restart: migrations are not applied twice, data and pending deliveries survive.
    let c = Catalog::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    assert!(c.get("c1").await.unwrap().is_some());
    assert_eq!(c.pending_webhooks().await.unwrap(), 1);
    assert_eq!(c.claim_webhooks(T0, 1000, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_unreachable_postgres_is_an_error_naming_the_url() {
    // A port nobody listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://tapir:hunter2@127.0.0.1:{port}/tapir");
    let err = Catalog::open(&url).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{msg}");
    assert!(
        msg.contains(&format!("postgres://tapir:***@127.0.0.1:{port}/tapir")),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn a_catalog_file_that_is_not_sqlite_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tapir.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = Catalog::open(path.to_str().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(path.to_str().unwrap()), "{err}");
}

#[tokio::test]
async fn a_postgres_outage_is_an_error_and_the_catalog_recovers_after_it() {
    let Some(pg) = common::pg::PgCluster::start() else {
        return;
    };
    let url = pg.create_db("outage").await;
    let c = Catalog::open(&url).await.unwrap();
    c.upsert(&entry("c1", T0)).await.unwrap();
    pg.stop();
    assert!(
        c.upsert(&entry("c2", T0)).await.is_err(),
        "an outage is an error, not a hang"
    );
    pg.start_again();
    // The pool reconnects by itself once the server is back.
    c.upsert(&entry("c2", T0)).await.unwrap();
    assert_eq!(c.count().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_open_one_empty_postgres_catalog_at_once_migrate_it_once() {
    // Several nodes started together on a fresh database: each runs the migrations at
    // start, and PostgreSQL's advisory lock makes them take turns, so every version is
    // applied once and every node opens (no "relation already exists" for the loser).
    let Some(pg) = common::pg::PgCluster::start() else {
        return;
    };
    let url = pg.create_db("together").await;
    // Polled together on one task: their connections and migrations still interleave on
    // the server.
    let (a, b, c, d) = tokio::join!(
        Catalog::open(&url),
        Catalog::open(&url),
        Catalog::open(&url),
        Catalog::open(&url)
    );
    let nodes: Vec<Catalog> = [a, b, c, d]
        .into_iter()
        .map(|r| r.expect("every node opens the catalog"))
        .collect();
    for (i, c) in nodes.iter().enumerate() {
        c.upsert(&entry(&format!("n{i}"), T0)).await.unwrap();
    }
    assert_eq!(nodes[0].count().await.unwrap(), 4);
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let (applied, versions): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let embedded = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count() as i64;
    assert_eq!((applied, versions), (embedded, embedded));
    for c in nodes {
        c.close().await;
    }
}
