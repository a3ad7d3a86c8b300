//! Transcripts in the catalog on SQLite and a real PostgreSQL: job rows, stored phrases and
//! summaries, full-text search with escaped highlights, the search filter by text, and the
//! transcript leaving with a purged recording.

mod common;

use serde_json::json;
use store::{
    Catalog, Entry, PhraseRow, Query, State, StoreError, StoredTranscript, TranscriptJob,
    TranscriptSummary,
};

const T0: i64 = 1_700_000_000_000;

fn entry(id: &str, start: i64, agent: &str) -> Entry {
    let meta = recorder::RecordingMetadata {
        contact_id: id.into(),
        from: "+4930111".into(),
        to: "201".into(),
        route: "pbx".into(),
        direction: "inbound".into(),
        start_unix_ms: start as u64,
        duration_ms: 60_000,
        agent_id: Some(agent.into()),
        ..Default::default()
    };
    Entry::from_metadata(&meta, "node-a", State::Stored, start).unwrap()
}

fn job(id: &str, node: &str, state: &str, next_at_ms: i64) -> TranscriptJob {
    TranscriptJob {
        contact_id: id.into(),
        node: node.into(),
        state: state.into(),
        attempts: 0,
        next_at_ms,
        error: None,
        engine: "pocketsphinx".into(),
        language: "en".into(),
        updated_ms: next_at_ms,
    }
}

fn phrase(speaker: &str, start_ms: i64, text: &str, sentiment: Option<f64>) -> PhraseRow {
    PhraseRow {
        speaker: speaker.into(),
        start_ms,
        end_ms: start_ms + 1500,
        text: text.into(),
        sentiment,
        words: json!([{"start_ms": start_ms, "end_ms": start_ms + 300, "text": text.split(' ').next()}]),
    }
}

fn transcript(id: &str, phrases: Vec<PhraseRow>) -> StoredTranscript {
    StoredTranscript {
        summary: TranscriptSummary {
            contact_id: id.into(),
            engine: "pocketsphinx".into(),
            language: "en".into(),
            phrase_count: 0,
            sentiment_avg: Some(0.25),
            customer_wpm: Some(150.0),
            agent_wpm: Some(171.5),
            created_ms: T0,
        },
        phrases,
    }
}

async fn jobs_are_rows_a_node_resumes(c: Catalog) {
    let a = job("c1", "node-a", "queued", T0);
    assert!(c.insert_transcript_job(&a).await.unwrap());
    assert!(
        !c.insert_transcript_job(&a).await.unwrap(),
        "a recording gets one job"
    );
    let mut running = job("c2", "node-a", "running", T0 - 5);
    running.attempts = 2;
    running.error = Some("the engine did not answer within 30s".into());
    c.save_transcript_job(&running).await.unwrap();
    c.save_transcript_job(&job("c3", "node-b", "queued", T0))
        .await
        .unwrap();
    c.save_transcript_job(&job("c4", "node-a", "done", T0))
        .await
        .unwrap();
    let active: Vec<String> = c
        .active_transcript_jobs("node-a")
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.contact_id)
        .collect();
    assert_eq!(active, ["c2", "c1"]);
    assert_eq!(c.transcript_job("c2").await.unwrap().unwrap(), running);
    // An update replaces the row.
    let mut done = running.clone();
    done.state = "failed".into();
    done.attempts = 3;
    c.save_transcript_job(&done).await.unwrap();
    assert_eq!(c.transcript_job("c2").await.unwrap().unwrap(), done);
    assert_eq!(c.transcript_job("nope").await.unwrap(), None);
}

/// What a restarting node checks: its own stored recordings in the window that have no job,
/// newest first and bounded; not another node's, not one still recording, not a deleted
/// one, not one from before the window, not one with a job of any state.
async fn stored_recordings_without_a_job_are_found(c: Catalog) {
    let with_state = |id: &str, start: i64, state: State, node: &str| {
        let mut e = entry(id, start, "anna");
        e.state = state;
        e.node = node.into();
        e
    };
    for e in [
        with_state("old", T0 - 10, State::Stored, "node-a"),
        with_state("s2", T0 + 20, State::Stored, "node-a"),
        with_state("s1", T0 + 10, State::Stored, "node-a"),
        with_state("s3", T0 + 30, State::Stored, "node-a"),
        with_state("other-node", T0 + 10, State::Stored, "node-b"),
        with_state("live", T0 + 10, State::Recording, "node-a"),
        with_state("gone", T0 + 10, State::Stored, "node-a"),
        with_state("has-job", T0 + 10, State::Stored, "node-a"),
        with_state("has-done-job", T0 + 10, State::Stored, "node-a"),
    ] {
        c.upsert(&e).await.unwrap();
    }
    c.soft_delete("gone", T0 + 40).await.unwrap();
    c.insert_transcript_job(&job("has-job", "node-a", "queued", T0))
        .await
        .unwrap();
    c.save_transcript_job(&job("has-done-job", "node-a", "done", T0))
        .await
        .unwrap();
    let found = c
        .stored_without_transcript_job("node-a", T0, 10)
        .await
        .unwrap();
    assert_eq!(found, ["s3", "s2", "s1"]);
    let bounded = c
        .stored_without_transcript_job("node-a", T0, 2)
        .await
        .unwrap();
    assert_eq!(bounded, ["s3", "s2"]);
    assert!(c
        .stored_without_transcript_job("node-c", T0, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Jobs of a node whose heartbeat is old are handed to the node that asks, once: not those
/// of a live node, nor of a node that never wrote a heartbeat, nor ended ones; bounded; a
/// second adopter finds nothing left.
async fn jobs_of_a_node_gone_are_adopted_once(c: Catalog) {
    c.node_seen("gone", T0 - 600_000).await.unwrap();
    c.node_seen("alive", T0 - 600_000).await.unwrap();
    c.node_seen("alive", T0 - 1_000).await.unwrap();
    for (id, node, state, at) in [
        ("g1", "gone", "queued", T0 - 10),
        ("g2", "gone", "running", T0 - 20),
        ("g3", "gone", "queued", T0 - 5),
        ("g-done", "gone", "done", T0 - 30),
        ("a1", "alive", "queued", T0 - 40),
        ("u1", "unknown", "queued", T0 - 50),
    ] {
        c.save_transcript_job(&job(id, node, state, at))
            .await
            .unwrap();
    }
    let stale = T0 - 300_000;
    let first = c.adopt_transcript_jobs("me", stale, T0, 2).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|j| j.contact_id.as_str()).collect();
    assert_eq!(ids, ["g2", "g1"], "due first, bounded");
    assert!(first.iter().all(|j| j.node == "me" && j.updated_ms == T0));
    assert_eq!(first[0].state, "running", "returned as it was");
    let rest = c
        .adopt_transcript_jobs("other", stale, T0, 10)
        .await
        .unwrap();
    let ids: Vec<&str> = rest.iter().map(|j| j.contact_id.as_str()).collect();
    assert_eq!(ids, ["g3"]);
    assert!(c
        .adopt_transcript_jobs("third", stale, T0, 10)
        .await
        .unwrap()
        .is_empty());
    let mine: Vec<String> = c
        .active_transcript_jobs("me")
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.contact_id)
        .collect();
    assert_eq!(mine, ["g2", "g1"]);
    assert_eq!(
        c.transcript_job("g-done").await.unwrap().unwrap().node,
        "gone"
    );
    assert_eq!(c.transcript_job("a1").await.unwrap().unwrap().node, "alive");
    assert_eq!(
        c.transcript_job("u1").await.unwrap().unwrap().node,
        "unknown"
    );
}

async fn a_transcript_is_stored_replaced_and_summarised(c: Catalog) {
    c.upsert(&entry("c1", T0, "anna")).await.unwrap();
    let t = transcript(
        "c1",
        vec![
            phrase("agent", 1000, "thank you for calling", Some(0.36)),
            phrase("customer", 3000, "my invoice is wrong", Some(-0.47)),
        ],
    );
    c.store_transcript(&t).await.unwrap();
    let got = c.transcript("c1").await.unwrap().unwrap();
    assert_eq!(got.phrases, t.phrases);
    assert_eq!(got.summary.phrase_count, 2);
    assert_eq!(got.summary.agent_wpm, Some(171.5));
    // A second run replaces the first.
    let t2 = transcript("c1", vec![phrase("agent", 500, "hello", None)]);
    c.store_transcript(&t2).await.unwrap();
    let got = c.transcript("c1").await.unwrap().unwrap();
    assert_eq!(got.phrases, t2.phrases);
    assert_eq!(got.summary.phrase_count, 1);
    assert!(c
        .search_transcripts("invoice", 10)
        .await
        .unwrap()
        .is_empty());
    let sums = c
        .transcript_summaries(&["c1".into(), "c9".into()])
        .await
        .unwrap();
    assert_eq!(sums.len(), 1);
    assert_eq!(sums[0].sentiment_avg, Some(0.25));
    assert!(c.transcript_summaries(&[]).await.unwrap().is_empty());
    assert_eq!(c.transcript("c9").await.unwrap(), None);
}

async fn search_finds_words_highlighted_and_escaped(c: Catalog) {
    c.upsert(&entry("c1", T0, "anna")).await.unwrap();
    c.upsert(&entry("c2", T0 + 1000, "bert")).await.unwrap();
    c.upsert(&entry("c3", T0 + 2000, "anna")).await.unwrap();
    c.store_transcript(&transcript(
        "c1",
        vec![
            phrase("customer", 1000, "I want to cancel my contract", None),
            phrase("agent", 4000, "I will send the refund by email", None),
        ],
    ))
    .await
    .unwrap();
    c.store_transcript(&transcript(
        "c2",
        vec![phrase(
            "customer",
            2000,
            "Cancel it <script>alert(1)</script> & now",
            None,
        )],
    ))
    .await
    .unwrap();

    // A word only the agent said, in one call.
    let hits = c.search_transcripts("REFUND", 0).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].contact_id, "c1");
    assert_eq!(hits[0].speaker, "agent");
    assert_eq!(hits[0].start_ms, 4000);
    assert!(
        hits[0].snippet_html.contains("<mark>refund</mark>"),
        "{}",
        hits[0].snippet_html
    );
    // A word nobody said.
    assert!(c.search_transcripts("lawyer", 0).await.unwrap().is_empty());
    // Both calls, newest first; engine text is escaped around the marks.
    let hits = c.search_transcripts("cancel", 0).await.unwrap();
    let ids: Vec<&str> = hits.iter().map(|h| h.contact_id.as_str()).collect();
    assert_eq!(ids, ["c2", "c1"]);
    let s = &hits[0].snippet_html;
    assert!(s.contains("<mark>Cancel</mark>"), "{s}");
    // SQLite keeps the tag as text (escaped); PostgreSQL's headline drops tags: never markup.
    assert!(!s.contains("<script>") && s.contains("alert(1)"), "{s}");
    if c.backend() == "sqlite" {
        assert!(s.contains("&lt;script&gt;"), "{s}");
    }
    assert!(s.contains("&amp;"), "{s}");
    // Every word must be in the phrase; syntax characters are only separators.
    assert_eq!(
        c.search_transcripts("cancel contract", 0)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        c.search_transcripts("\"cancel\" OR (x", 0)
            .await
            .unwrap()
            .len(),
        0
    );
    assert!(c.search_transcripts("cancel*", 0).await.unwrap().len() == 2);
    for bad in ["", "*** ((("] {
        assert!(matches!(
            c.search_transcripts(bad, 0).await,
            Err(StoreError::BadQuery { param: "q", .. })
        ));
    }
    assert!(matches!(
        c.search_transcripts("x", 1001).await,
        Err(StoreError::BadQuery { param: "limit", .. })
    ));

    // The recordings search filters by text, with the other filters.
    let q = |text: &str, agent: Option<&str>| Query {
        text: Some(text.into()),
        agent: agent.map(str::to_string),
        ..Default::default()
    };
    let ids =
        |p: store::Page| -> Vec<String> { p.entries.into_iter().map(|e| e.contact_id).collect() };
    assert_eq!(ids(c.search(&q("refund", None)).await.unwrap()), ["c1"]);
    assert_eq!(
        ids(c.search(&q("cancel", None)).await.unwrap()),
        ["c2", "c1"]
    );
    assert_eq!(
        ids(c.search(&q("cancel", Some("anna"))).await.unwrap()),
        ["c1"]
    );
    assert!(ids(c.search(&q("lawyer", None)).await.unwrap()).is_empty());
    assert!(matches!(
        c.search(&q("  ", None)).await,
        Err(StoreError::BadQuery { param: "text", .. })
    ));

    // Snippets for a page of results: only the recordings asked for, a bounded number each.
    let page = ["c1".to_string(), "c3".to_string()];
    let snips = c.transcript_snippets("cancel", &page, 5).await.unwrap();
    assert_eq!(snips.len(), 1);
    assert_eq!(
        (snips[0].contact_id.as_str(), snips[0].start_ms),
        ("c1", 1000)
    );
    assert!(
        snips[0].snippet_html.contains("<mark>cancel</mark>"),
        "{:?}",
        snips[0]
    );
    c.store_transcript(&transcript(
        "c3",
        (0..4)
            .map(|i| phrase("agent", i * 2000, "refund refund <b>", None))
            .collect(),
    ))
    .await
    .unwrap();
    let snips = c
        .transcript_snippets("refund", &["c3".into(), "c1".into()], 2)
        .await
        .unwrap();
    let got: Vec<(&str, i64)> = snips
        .iter()
        .map(|h| (h.contact_id.as_str(), h.start_ms))
        .collect();
    assert_eq!(got, [("c1", 4000), ("c3", 0), ("c3", 2000)]);
    assert!(!snips[1].snippet_html.contains("<b>"), "{:?}", snips[1]);
    assert!(c
        .transcript_snippets("refund", &[], 2)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        c.transcript_snippets("  ", &page, 2).await,
        Err(StoreError::BadQuery { param: "text", .. })
    ));

    // Soft-deleted recordings leave the results; a purge takes the transcript with it.
    c.soft_delete("c2", T0 + 10).await.unwrap();
    let ids_after: Vec<String> = c
        .search_transcripts("cancel", 0)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.contact_id)
        .collect();
    assert_eq!(ids_after, ["c1"]);
    assert!(c.mark_purged("c2", T0 + 20).await.unwrap());
    assert_eq!(c.transcript("c2").await.unwrap(), None);
    assert!(c.transcript("c1").await.unwrap().is_some());
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
    jobs_are_rows_a_node_resumes,
    stored_recordings_without_a_job_are_found,
    jobs_of_a_node_gone_are_adopted_once,
    a_transcript_is_stored_replaced_and_summarised,
    search_finds_words_highlighted_and_escaped,
);
