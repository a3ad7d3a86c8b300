//! The API router in-process: a SQLite catalog and a local storage in a temporary directory,
//! seeded with entries and files, asked through `tower::ServiceExt::oneshot`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use recorder::{Format, RecordingMetadata};
use serde_json::Value;
use store::{Catalog, Entry, State, Statement, Storage, StorageConfig};
use tower::ServiceExt;

use super::*;

/// 2024-03-01T09:30:00Z.
const T0: i64 = 1_709_285_400_000;
const HOUR: i64 = 3_600_000;

struct Fixture {
    _dir: tempfile::TempDir,
    catalog: Catalog,
    metrics: Arc<Metrics>,
    app: Router,
    /// Contents of every stored file by contact or statement file id.
    files: HashMap<String, Vec<u8>>,
    sha: HashMap<String, String>,
}

/// Deterministic bytes that differ everywhere, so a slice at the wrong offset cannot match.
fn content(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct Seed {
    id: &'static str,
    start_ms: i64,
    duration_s: i64,
    agent: Option<&'static str>,
    direction: &'static str,
    number: &'static str,
    format: Format,
    state: State,
    size: usize,
}

fn meta(s: &Seed) -> RecordingMetadata {
    RecordingMetadata {
        contact_id: s.id.into(),
        call_id_customer: Some(format!("cust-{}@192.0.2.1", s.id)),
        call_id_agent: Some(format!("agent/{}@192.0.2.2", s.id)),
        from: s.number.into(),
        to: "201".into(),
        station: Some("201".into()),
        direction: s.direction.into(),
        route: "pbx".into(),
        start_unix_ms: s.start_ms as u64,
        duration_ms: (s.duration_s * 1000) as u64,
        call_duration_ms: (s.duration_s * 1000) as u64,
        format: s.format,
        agent_id: s.agent.map(str::to_string),
        team: Some("complaints".into()),
        queue: Some("q1".into()),
        ..Default::default()
    }
}

fn peaks_json(buckets: usize) -> Vec<u8> {
    let pairs = |seed: i16| -> Vec<i16> {
        (0..buckets)
            .flat_map(|i| {
                let v = ((i as i16).wrapping_mul(seed)) & 0x3fff;
                [-v, v]
            })
            .collect()
    };
    let p = analysis::Peaks {
        sample_rate: 8000,
        buckets_per_second: 100,
        frames: buckets as u64 * 80,
        customer: pairs(7),
        agent: pairs(13),
    };
    serde_json::to_vec(&p).unwrap()
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .unwrap();
        let storage = Storage::open(&StorageConfig::Local(dir.path().join("rec"))).unwrap();
        let metrics = Arc::new(Metrics::new());
        let mut f = Fixture {
            app: router(ApiState::new(
                catalog.clone(),
                storage.clone(),
                metrics.clone(),
            )),
            _dir: dir,
            catalog,
            metrics,
            files: HashMap::new(),
            sha: HashMap::new(),
        };
        let seeds = [
            Seed {
                id: "c1",
                start_ms: T0,
                duration_s: 60,
                agent: Some("anna"),
                direction: "inbound",
                number: "+4930111",
                format: Format::Wav,
                state: State::Stored,
                size: 100_000,
            },
            Seed {
                id: "c2",
                start_ms: T0 + HOUR,
                duration_s: 30,
                agent: Some("bert"),
                direction: "outbound",
                number: "+4940222",
                format: Format::Mp3,
                state: State::Stored,
                size: 5_000,
            },
            Seed {
                id: "c3",
                start_ms: T0 + 2 * HOUR,
                duration_s: 90,
                agent: Some("anna"),
                direction: "inbound",
                number: "+4930999",
                format: Format::Wav,
                state: State::Finished,
                size: 0,
            },
            Seed {
                id: "c4",
                start_ms: T0 + 3 * HOUR,
                duration_s: 10,
                agent: Some("anna"),
                direction: "inbound",
                number: "+4930111",
                format: Format::Wav,
                state: State::Stored,
                size: 1_000,
            },
            Seed {
                id: "c5",
                start_ms: T0 + 4 * HOUR,
                duration_s: 20,
                agent: None,
                direction: "inbound_ivr",
                number: "+3312345",
                format: Format::Wav,
                state: State::Stored,
                size: 2_000,
            },
        ];
        let tmp = f._dir.path().join("spool");
        std::fs::create_dir_all(&tmp).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            let e = Entry::from_metadata(&meta(s), "node-a", State::Finished, T0).unwrap();
            f.catalog.upsert(&e).await.unwrap();
            if s.state == State::Stored {
                let ext = s.format.extension();
                let key = store::storage_key(s.start_ms, s.id, ext);
                let bytes = content(s.size, i as u32 + 1);
                let path = tmp.join(format!("{}.{ext}", s.id));
                std::fs::write(&path, &bytes).unwrap();
                let o = storage.put_file(&key, &path).await.unwrap();
                assert!(f
                    .catalog
                    .mark_stored(s.id, &key, o.size as i64, &o.sha256, T0)
                    .await
                    .unwrap());
                f.files.insert(s.id.into(), bytes);
                f.sha.insert(s.id.into(), o.sha256);
                if s.id == "c1" {
                    let peaks = tmp.join("c1.peaks.json");
                    std::fs::write(&peaks, peaks_json(6000)).unwrap();
                    storage
                        .put_file(&store::shelf::companion_key(&key, "peaks.json"), &peaks)
                        .await
                        .unwrap();
                }
            }
        }
        // Statement "terms" on c1 (stored), on c3 (not stored yet, recorded later) and on c4
        // (deleted below); "gone" only on c4.
        for (contact, sid, start, stored) in [
            ("c1", "terms", T0 + 5_000, true),
            ("c3", "terms", T0 + 2 * HOUR + 5_000, false),
            ("c4", "terms", T0 + 3 * HOUR + 5_000, true),
            ("c4", "gone", T0 + 3 * HOUR + 6_000, true),
        ] {
            let m = RecordingMetadata {
                contact_id: contact.into(),
                statement_id: Some(sid.into()),
                start_unix_ms: start as u64,
                duration_ms: 4000,
                ..Default::default()
            };
            let file_id = format!("{contact}-statement-{sid}");
            let st = Statement::from_metadata(&m, &file_id, State::Finished, T0).unwrap();
            f.catalog.upsert_statement(&st).await.unwrap();
            if stored {
                let key = store::storage_key(start, &file_id, "wav");
                let bytes = content(3_000, start as u32);
                let path = tmp.join(format!("{file_id}.wav"));
                std::fs::write(&path, &bytes).unwrap();
                let o = storage.put_file(&key, &path).await.unwrap();
                assert!(f
                    .catalog
                    .mark_statement_stored(&file_id, &key, o.size as i64, &o.sha256, T0)
                    .await
                    .unwrap());
                f.files.insert(file_id, bytes);
            }
        }
        assert_eq!(
            f.catalog.soft_delete("c4", T0).await.unwrap(),
            store::DeleteOutcome::Deleted
        );
        assert!(f.catalog.set_legal_hold("c5", true, T0).await.unwrap());
        // c1 is transcribed (with text that must never become markup), c2's job failed.
        let job = |id: &str, state: &str, error: Option<&str>| store::TranscriptJob {
            contact_id: id.into(),
            node: "node-a".into(),
            state: state.into(),
            attempts: 3,
            next_at_ms: T0,
            error: error.map(str::to_string),
            engine: "http".into(),
            language: "en".into(),
            updated_ms: T0,
        };
        f.catalog
            .save_transcript_job(&job("c1", "done", None))
            .await
            .unwrap();
        f.catalog
            .save_transcript_job(&job("c2", "failed", Some("engine: HTTP 500")))
            .await
            .unwrap();
        let phrase = |speaker: &str, start_ms, text: &str, sentiment| store::PhraseRow {
            speaker: speaker.into(),
            start_ms,
            end_ms: start_ms + 2000,
            text: text.into(),
            sentiment,
            words: serde_json::json!([]),
        };
        f.catalog
            .store_transcript(&store::StoredTranscript {
                summary: store::TranscriptSummary {
                    contact_id: "c1".into(),
                    engine: "http".into(),
                    language: "en".into(),
                    phrase_count: 2,
                    sentiment_avg: Some(-0.1),
                    customer_wpm: Some(150.0),
                    agent_wpm: Some(120.0),
                    created_ms: T0,
                },
                phrases: vec![
                    phrase("customer", 1000, "my <b>invoice</b> is wrong", Some(-0.5)),
                    phrase("agent", 4000, "I will refund you today", Some(0.3)),
                ],
            })
            .await
            .unwrap();
        f
    }

    async fn send(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Answer {
        self.send_from(method, uri, headers, Some(([127, 0, 0, 1], 40000).into()))
            .await
    }

    async fn send_from(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        peer: Option<SocketAddr>,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(peer) = peer {
            b = b.extension(ConnectInfo(peer));
        }
        let r = self
            .app
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send("GET", uri, &[]).await
    }

    /// Contact ids of a search.
    async fn ids(&self, query: &str) -> Vec<String> {
        let a = self.get(&format!("/api/v1/recordings?{query}")).await;
        assert_eq!(a.status, StatusCode::OK, "{query}: {}", a.text());
        a.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["contact_id"].as_str().unwrap().to_string())
            .collect()
    }
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    /// A JSON error with this status, message and (maybe) parameter.
    fn is_error(&self, status: StatusCode, error: &str, param: Option<&str>) {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.header("content-type"), "application/json");
        let j = self.json();
        if error.is_empty() {
            assert!(j["error"].is_string(), "{j}");
        } else {
            assert_eq!(j["error"], error, "{j}");
        }
        assert_eq!(j["param"].as_str(), param, "{j}");
    }
}

#[tokio::test]
async fn searches_filter_sort_and_page() {
    let f = Fixture::new().await;
    // Newest first by default; the soft-deleted c4 is never listed.
    assert_eq!(f.ids("").await, ["c5", "c3", "c2", "c1"]);
    assert_eq!(f.ids("agent=anna").await, ["c3", "c1"]);
    assert_eq!(
        f.ids("team=complaints&queue=q1&limit=2").await,
        ["c5", "c3"]
    );
    assert_eq!(f.ids("direction=outbound").await, ["c2"]);
    assert_eq!(f.ids("direction=inbound_ivr").await, ["c5"]);
    assert_eq!(f.ids("number=%2B4930").await, ["c3", "c1"]);
    // An unencoded + arrives as a space, and is put back.
    assert_eq!(f.ids("number=+4940").await, ["c2"]);
    assert_eq!(
        f.ids("from=2024-03-01T10:30:00Z&to=2024-03-01T12:30:00%2B01:00")
            .await,
        ["c2"]
    );
    assert_eq!(
        f.ids(&format!("from={}&to={}", T0, T0 + HOUR)).await,
        ["c1"]
    );
    assert_eq!(f.ids("min_duration=45").await, ["c3", "c1"]);
    assert_eq!(
        f.ids("min_duration=20&max_duration=30.0").await,
        ["c5", "c2"]
    );
    assert_eq!(f.ids("has_statement=true").await, ["c3", "c1"]);
    assert_eq!(f.ids("has_statement=false").await, ["c5", "c2"]);
    assert_eq!(f.ids("state=stored").await, ["c5", "c2", "c1"]);
    assert_eq!(f.ids("state=finished").await, ["c3"]);
    assert_eq!(f.ids("sort=duration_asc").await, ["c5", "c2", "c1", "c3"]);
    assert_eq!(f.ids("sort=start_asc&agent=anna").await, ["c1", "c3"]);
    // Paging: two pages of two, then nothing.
    let a = f.get("/api/v1/recordings?limit=2&sort=start_asc").await;
    let j = a.json();
    assert_eq!(j["items"].as_array().unwrap().len(), 2);
    let cursor = j["next_cursor"].as_str().unwrap().to_string();
    assert_eq!(
        f.ids(&format!("limit=2&sort=start_asc&cursor={cursor}"))
            .await,
        ["c3", "c5"]
    );
    let last = f
        .get(&format!(
            "/api/v1/recordings?limit=2&sort=start_asc&cursor={cursor}"
        ))
        .await
        .json();
    assert!(last["next_cursor"].is_null(), "{last}");
    // Items keep the entry's field names, without statements.
    let item = &f.get("/api/v1/recordings?agent=bert").await.json()["items"][0];
    assert_eq!(item["customer_number"], "+4940222");
    assert_eq!(item["format"], "mp3");
    assert_eq!(item["state"], "stored");
    assert_eq!(item["sha256"], f.sha["c2"].as_str());
    assert_eq!(item["statements"], serde_json::json!([]));
}

#[tokio::test]
async fn bad_parameters_get_400_naming_them() {
    let f = Fixture::new().await;
    for (query, param) in [
        ("min_duration=abc", "min_duration"),
        ("from=last%20tuesday", "from"),
        ("from=2000&to=1000", "to"),
        ("limit=5000", "limit"),
        ("sort=size", "sort"),
        ("state=gone", "state"),
        ("has_statement=maybe", "has_statement"),
        ("cursor=zz", "cursor"),
        ("agentt=anna", "agentt"),
        ("agent=a&agent=b", "agent"),
        ("direction=", "direction"),
    ] {
        f.get(&format!("/api/v1/recordings?{query}"))
            .await
            .is_error(StatusCode::BAD_REQUEST, "", Some(param));
    }
    let a = f.get("/api/v1/recordings?min_duration=abc").await;
    assert!(a.json()["error"].as_str().unwrap().contains("min_duration"));
    for (uri, param) in [
        ("/api/v1/recordings/c1/audio?download=please", "download"),
        ("/api/v1/recordings/c1/audio?start=5", "start"),
        ("/api/v1/recordings/c1/peaks?buckets=0", "buckets"),
        ("/api/v1/recordings/c1/peaks?buckets=100001", "buckets"),
        ("/api/v1/recordings/c1?verbose=1", "verbose"),
        ("/api/v1/statements/terms?x=1", "x"),
    ] {
        f.get(uri)
            .await
            .is_error(StatusCode::BAD_REQUEST, "", Some(param));
    }
}

#[tokio::test]
async fn one_recording_with_its_statements_and_decisions() {
    let f = Fixture::new().await;
    let a = f.get("/api/v1/recordings/c1").await;
    assert_eq!(a.status, StatusCode::OK);
    let j = a.json();
    assert_eq!(j["contact_id"], "c1");
    assert_eq!(j["agent"], "anna");
    assert_eq!(j["call_id_customer"], "cust-c1@192.0.2.1");
    assert!(j["segments"].is_array());
    assert!(j.as_object().unwrap().contains_key("decisions"));
    let st = j["statements"].as_array().unwrap();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["statement_id"], "terms");
    f.get("/api/v1/recordings/nope")
        .await
        .is_error(StatusCode::NOT_FOUND, "not found", None);
    f.get("/api/v1/recordings/c4")
        .await
        .is_error(StatusCode::NOT_FOUND, "deleted", None);
}

#[tokio::test]
async fn audio_is_whole_or_exactly_the_range_asked() {
    let f = Fixture::new().await;
    let file = &f.files["c1"];
    let size = file.len();
    let a = f.get("/api/v1/recordings/c1/audio").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-type"), "audio/wav");
    assert_eq!(a.header("content-length"), size.to_string());
    assert_eq!(a.header("accept-ranges"), "bytes");
    assert_eq!(a.header("etag"), format!("\"{}\"", f.sha["c1"]));
    assert!(a.headers.get("content-disposition").is_none());
    assert_eq!(&a.body, file);
    for (range, want) in [
        ("bytes=1000-1999", 1000..2000),
        ("bytes=0-0", 0..1),
        ("bytes=-500", size - 500..size),
        ("bytes=99000-", 99_000..size),
        ("bytes=99990-200000", 99_990..size),
        ("bytes=500000-,10-19", 10..20),
    ] {
        let a = f
            .send("GET", "/api/v1/recordings/c1/audio", &[("range", range)])
            .await;
        assert_eq!(a.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(&a.body[..], &file[want.clone()], "{range}");
        assert_eq!(
            a.header("content-range"),
            format!("bytes {}-{}/{size}", want.start, want.end - 1)
        );
        assert_eq!(a.header("content-length"), want.len().to_string());
        assert_eq!(a.header("content-type"), "audio/wav");
    }
    for range in ["bytes=100000-", "bytes=-0", "bytes=200000-300000"] {
        let a = f
            .send("GET", "/api/v1/recordings/c1/audio", &[("range", range)])
            .await;
        a.is_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range not satisfiable",
            None,
        );
        assert_eq!(a.header("content-range"), "bytes */100000");
    }
    // A malformed range, or one for a copy that changed, gets the whole file.
    for headers in [
        &[("range", "bytes=5-1")][..],
        &[("range", "bytes=0-9"), ("if-range", "\"other\"")][..],
    ] {
        let a = f.send("GET", "/api/v1/recordings/c1/audio", headers).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body.len(), size);
    }
    let tag = format!("\"{}\"", f.sha["c1"]);
    let a = f
        .send(
            "GET",
            "/api/v1/recordings/c1/audio",
            &[("range", "bytes=0-9"), ("if-range", &tag)],
        )
        .await;
    assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    let a = f
        .send(
            "GET",
            "/api/v1/recordings/c1/audio",
            &[("if-none-match", &tag)],
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED);
    assert!(a.body.is_empty());
    // HEAD: the headers without the body.
    let a = f.send("HEAD", "/api/v1/recordings/c1/audio", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-length"), size.to_string());
    assert!(a.body.is_empty());
    // MP3, as an attachment.
    let a = f.get("/api/v1/recordings/c2/audio?download=1").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-type"), "audio/mpeg");
    assert_eq!(
        a.header("content-disposition"),
        "attachment; filename=\"c2.mp3\""
    );
    assert_eq!(&a.body, &f.files["c2"]);
}

#[tokio::test]
async fn audio_not_stored_deleted_or_unknown() {
    let f = Fixture::new().await;
    let a = f.get("/api/v1/recordings/c3/audio").await;
    a.is_error(StatusCode::CONFLICT, "not stored yet", None);
    assert_eq!(a.header("retry-after"), "5");
    f.get("/api/v1/recordings/c3/peaks").await.is_error(
        StatusCode::CONFLICT,
        "not stored yet",
        None,
    );
    f.get("/api/v1/recordings/c4/audio")
        .await
        .is_error(StatusCode::NOT_FOUND, "deleted", None);
    f.get("/api/v1/recordings/zz/audio")
        .await
        .is_error(StatusCode::NOT_FOUND, "not found", None);
    // Held recordings are served like any other.
    let a = f.get("/api/v1/recordings/c5/audio").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(&a.body, &f.files["c5"]);
}

#[tokio::test]
async fn peaks_in_wavesurfer_form() {
    let f = Fixture::new().await;
    let a = f.get("/api/v1/recordings/c1/peaks").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.header("content-type"), "application/json");
    let j = a.json();
    assert_eq!(j["duration"], 60.0);
    let peaks = j["peaks"].as_array().unwrap();
    assert_eq!(peaks.len(), 2);
    // 6000 buckets merged by 2 to fit the default 4000: 3000 min/max pairs.
    assert_eq!(peaks[0].as_array().unwrap().len(), 6000);
    let j = f.get("/api/v1/recordings/c1/peaks?buckets=10").await.json();
    for ch in j["peaks"].as_array().unwrap() {
        let v = ch.as_array().unwrap();
        assert_eq!(v.len(), 20);
        assert!(v
            .iter()
            .all(|x| (-1.0..=1.0).contains(&x.as_f64().unwrap())));
    }
    f.get("/api/v1/recordings/c2/peaks")
        .await
        .is_error(StatusCode::NOT_FOUND, "no peaks", None);
    f.get("/api/v1/recordings/c4/peaks")
        .await
        .is_error(StatusCode::NOT_FOUND, "deleted", None);
}

#[tokio::test]
async fn either_legs_call_id_finds_the_recording() {
    let f = Fixture::new().await;
    for uri in [
        "/api/v1/calls/cust-c1@192.0.2.1/recording",
        "/api/v1/calls/cust-c1%40192.0.2.1/recording",
        "/api/v1/calls/agent%2Fc1@192.0.2.2/recording",
    ] {
        let a = f.get(uri).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text());
        assert_eq!(a.json()["contact_id"], "c1", "{uri}");
        assert_eq!(a.json()["statements"].as_array().unwrap().len(), 1);
    }
    // A path that does not decode to text is a JSON 400 like any bad parameter.
    f.get("/api/v1/calls/%FF%FE/recording")
        .await
        .is_error(StatusCode::BAD_REQUEST, "", None);
    f.get("/api/v1/calls/unknown@x/recording").await.is_error(
        StatusCode::NOT_FOUND,
        "not found",
        None,
    );
    f.get("/api/v1/calls/cust-c4@192.0.2.1/recording")
        .await
        .is_error(StatusCode::NOT_FOUND, "deleted", None);
}

#[tokio::test]
async fn statements_by_id_and_their_audio() {
    let f = Fixture::new().await;
    let a = f.get("/api/v1/statements/terms").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let j = a.json();
    assert_eq!(j["statement_id"], "terms");
    // c4's is left out (its contact is deleted); c3's is listed, not stored yet.
    let items = j["items"].as_array().unwrap();
    let contacts: Vec<&str> = items
        .iter()
        .map(|s| s["contact_id"].as_str().unwrap())
        .collect();
    assert_eq!(contacts, ["c1", "c3"]);
    assert_eq!(items[0]["id"], "c1-statement-terms");
    assert!(items[0]["storage_key"]
        .as_str()
        .unwrap()
        .ends_with("/c1-statement-terms.wav"));
    assert!(items[1]["storage_key"].is_null());
    let file = &f.files["c1-statement-terms"];
    let a = f.get("/api/v1/statements/terms/audio").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-type"), "audio/wav");
    assert_eq!(&a.body, file);
    let a = f
        .send(
            "GET",
            "/api/v1/statements/terms/audio?download=1",
            &[("range", "bytes=-100")],
        )
        .await;
    assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&a.body[..], &file[file.len() - 100..]);
    assert_eq!(
        a.header("content-disposition"),
        "attachment; filename=\"c1-statement-terms.wav\""
    );
    f.get("/api/v1/statements/unknown")
        .await
        .is_error(StatusCode::NOT_FOUND, "not found", None);
    f.get("/api/v1/statements/gone")
        .await
        .is_error(StatusCode::NOT_FOUND, "deleted", None);
    f.get("/api/v1/statements/gone/audio")
        .await
        .is_error(StatusCode::NOT_FOUND, "deleted", None);
}

#[tokio::test]
async fn delete_and_legal_hold() {
    let f = Fixture::new().await;
    let a = f.send("DELETE", "/api/v1/recordings/c2", &[]).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text());
    assert!(a.body.is_empty());
    f.get("/api/v1/recordings/c2")
        .await
        .is_error(StatusCode::NOT_FOUND, "deleted", None);
    f.get("/api/v1/recordings/c2/audio")
        .await
        .is_error(StatusCode::NOT_FOUND, "deleted", None);
    assert_eq!(f.ids("").await, ["c5", "c3", "c1"]);
    assert_eq!(f.ids("state=stored").await, ["c5", "c1"]);
    f.send("DELETE", "/api/v1/recordings/c2", &[])
        .await
        .is_error(StatusCode::NOT_FOUND, "deleted", None);
    f.send("DELETE", "/api/v1/recordings/nope", &[])
        .await
        .is_error(StatusCode::NOT_FOUND, "not found", None);
    f.send("DELETE", "/api/v1/recordings/c5", &[])
        .await
        .is_error(StatusCode::CONFLICT, "legal hold", None);
    assert!(f
        .catalog
        .get("c5")
        .await
        .unwrap()
        .unwrap()
        .deleted_at_ms
        .is_none());
    // Hold, refuse, release, delete.
    assert_eq!(
        f.send("PUT", "/api/v1/recordings/c1/hold", &[])
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(f.catalog.get("c1").await.unwrap().unwrap().legal_hold);
    f.send("DELETE", "/api/v1/recordings/c1", &[])
        .await
        .is_error(StatusCode::CONFLICT, "legal hold", None);
    assert_eq!(
        f.send("DELETE", "/api/v1/recordings/c1/hold", &[])
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(!f.catalog.get("c1").await.unwrap().unwrap().legal_hold);
    assert_eq!(
        f.send("DELETE", "/api/v1/recordings/c1", &[]).await.status,
        StatusCode::NO_CONTENT
    );
    // A soft-deleted recording can still be held (that stops its purge).
    assert_eq!(
        f.send("PUT", "/api/v1/recordings/c1/hold", &[])
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(f
        .catalog
        .purge_candidates(i64::MAX, 100)
        .await
        .unwrap()
        .iter()
        .all(|e| e.contact_id != "c1"));
    // A purged one cannot.
    assert!(f.catalog.mark_purged("c4", T0 + 1).await.unwrap());
    f.send("PUT", "/api/v1/recordings/c4/hold", &[])
        .await
        .is_error(StatusCode::NOT_FOUND, "deleted", None);
    f.send("PUT", "/api/v1/recordings/nope/hold", &[])
        .await
        .is_error(StatusCode::NOT_FOUND, "not found", None);
    f.send("DELETE", "/api/v1/recordings/nope/hold", &[])
        .await
        .is_error(StatusCode::NOT_FOUND, "not found", None);
    // Purged entries are found with state=deleted only.
    assert_eq!(f.ids("state=deleted").await, ["c4"]);
}

#[tokio::test]
async fn only_clients_on_this_host_are_answered() {
    let f = Fixture::new().await;
    for peer in [Some(([192, 0, 2, 7], 5000).into()), None] {
        f.send_from("GET", "/api/v1/recordings", &[], peer)
            .await
            .is_error(
                StatusCode::FORBIDDEN,
                "the recordings API answers clients on this host only",
                None,
            );
    }
    let a = f
        .send_from(
            "GET",
            "/api/v1/recordings/c1",
            &[],
            Some("[::1]:5000".parse().unwrap()),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn requests_are_counted_by_endpoint_and_status() {
    let f = Fixture::new().await;
    f.get("/api/v1/recordings").await;
    f.get("/api/v1/recordings?limit=x").await;
    f.get("/api/v1/recordings/c1/audio").await;
    f.get("/api/v1/nothing-here").await;
    let m = f.metrics.render();
    for line in [
        r#"tapir_api_requests_total{endpoint="GET /recordings",status="200"} 1"#,
        r#"tapir_api_requests_total{endpoint="GET /recordings",status="400"} 1"#,
        r#"tapir_api_requests_total{endpoint="GET /recordings/{contact_id}/audio",status="200"} 1"#,
        r#"tapir_api_requests_total{endpoint="unknown",status="404"} 1"#,
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
}

#[tokio::test]
async fn a_catalog_outage_is_503() {
    let f = Fixture::new().await;
    f.catalog.close().await;
    f.get("/api/v1/recordings").await.is_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "catalog unavailable",
        None,
    );
    f.get("/api/v1/recordings/c1/audio").await.is_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "catalog unavailable",
        None,
    );
}

#[tokio::test]
async fn transcripts_their_document_and_text_search() {
    let f = Fixture::new().await;
    let t = f.get("/api/v1/recordings/c1/transcript").await;
    assert_eq!(t.status, StatusCode::OK);
    let j = t.json();
    assert_eq!(j["state"], "done");
    assert_eq!(j["engine"], "http");
    assert_eq!(j["sentiment"], -0.1);
    assert_eq!(j["label"], "negative");
    assert_eq!(
        j["words_per_minute"],
        serde_json::json!({"customer": 150.0, "agent": 120.0})
    );
    assert_eq!(j["error"], Value::Null);
    assert_eq!(
        j["phrases"][0],
        serde_json::json!({"speaker": "customer", "channel": 1, "start_ms": 1000,
            "end_ms": 3000, "text": "my <b>invoice</b> is wrong", "sentiment": -0.5,
            "label": "negative"})
    );
    assert_eq!(j["phrases"][1]["channel"], 2);
    let failed = f.get("/api/v1/recordings/c2/transcript").await.json();
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["error"], "engine: HTTP 500");
    assert_eq!(failed["phrases"], serde_json::json!([]));
    for (uri, error) in [
        ("/api/v1/recordings/c5/transcript", "no transcript"),
        ("/api/v1/recordings/c5/transcript.html", "no transcript"),
        ("/api/v1/recordings/nope/transcript", "not found"),
        ("/api/v1/recordings/c4/transcript", "deleted"),
    ] {
        f.get(uri)
            .await
            .is_error(StatusCode::NOT_FOUND, error, None);
    }
    f.get("/api/v1/recordings/c1/transcript?x=1")
        .await
        .is_error(StatusCode::BAD_REQUEST, "unknown parameter x", Some("x"));

    let d = f.get("/api/v1/recordings/c1/transcript.html").await;
    assert_eq!(d.status, StatusCode::OK);
    assert_eq!(d.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(
        d.header("content-disposition"),
        "attachment; filename=\"c1.transcript.html\""
    );
    assert!(d
        .header("content-security-policy")
        .starts_with("default-src 'none'"));
    let html = d.text();
    assert!(
        html.contains("my &lt;b&gt;invoice&lt;/b&gt; is wrong"),
        "{html}"
    );
    assert!(!html.contains("<b>invoice"), "{html}");
    assert!(html.contains("I will refund you today"));

    // Talking speed joins the recording's metrics.
    let e = f.get("/api/v1/recordings/c1").await.json();
    if e["metrics"].is_object() {
        assert_eq!(e["metrics"]["customer_words_per_minute"], 150.0);
    }

    // Search by text: the call, its sentiment and the matching phrase, escaped and marked.
    let page = f.get("/api/v1/recordings?text=Refund").await.json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["contact_id"], "c1");
    assert_eq!(items[0]["sentiment"], -0.1);
    assert_eq!(items[0]["sentiment_label"], "negative");
    assert_eq!(
        items[0]["snippets"],
        serde_json::json!([{"speaker": "agent", "channel": 2, "start_ms": 4000,
            "end_ms": 6000, "snippet_html": "I will <mark>refund</mark> you today"}])
    );
    let page = f.get("/api/v1/recordings?text=invoice").await.json();
    let snippet = page["items"][0]["snippets"][0]["snippet_html"]
        .as_str()
        .unwrap();
    assert!(
        snippet.contains("&lt;b&gt;<mark>invoice</mark>&lt;/b&gt;"),
        "{snippet}"
    );
    assert!(
        f.get("/api/v1/recordings?text=lawyer").await.json()["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    f.get("/api/v1/recordings?text=%2A%2A").await.is_error(
        StatusCode::BAD_REQUEST,
        "",
        Some("text"),
    );
    // Without text, every result says its sentiment (null until transcribed), no snippets.
    let all = f.get("/api/v1/recordings").await.json();
    for item in all["items"].as_array().unwrap() {
        let want = if item["contact_id"] == "c1" {
            serde_json::json!(-0.1)
        } else {
            Value::Null
        };
        assert_eq!(item["sentiment"], want, "{item}");
        assert_eq!(item["snippets"], serde_json::json!([]));
    }
}

/// `(method, path)` of every operation in the OpenAPI document.
fn documented() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut out = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_served() {
    let served: BTreeSet<(String, String)> = endpoints()
        .iter()
        .map(|e| (e.method.to_string(), format!("{PREFIX}{}", e.path)))
        .collect();
    assert_eq!(served, documented());
    // And the router answers each of them (not its "no such endpoint" fallback, not 405).
    let f = Fixture::new().await;
    for (method, path) in documented() {
        // Deleting c1 would hide it from the GETs that follow: delete c2.
        let contact = if method == "DELETE" && path.ends_with("{contact_id}") {
            "c2"
        } else {
            "c1"
        };
        let uri = path
            .replace("{contact_id}", contact)
            .replace("{sip_call_id}", "cust-c1@192.0.2.1")
            .replace("{statement_id}", "terms");
        let a = f.send(&method, &uri, &[]).await;
        assert!(
            a.status.is_success(),
            "{method} {uri}: {} {}",
            a.status,
            a.text()
        );
    }
    let a = f.get("/api/v1/openapi.json").await;
    assert_eq!(a.header("content-type"), "application/json");
    assert_eq!(a.json()["info"]["title"], "tapir recordings API");
    f.get("/api/v1/recording")
        .await
        .is_error(StatusCode::NOT_FOUND, "no such endpoint", None);
    f.send("POST", "/api/v1/recordings", &[]).await.is_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        None,
    );
}

#[tokio::test]
async fn the_documented_schemas_name_every_field_served() {
    let f = Fixture::new().await;
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let props = |name: &str| -> BTreeSet<String> {
        doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    let entry = f.get("/api/v1/recordings/c1").await.json();
    assert_eq!(keys(&entry), props("Entry"));
    assert_eq!(keys(&entry["statements"][0]), props("Statement"));
    assert_eq!(keys(&entry["counters"]), props("Counters"));
    let page = f.get("/api/v1/recordings").await.json();
    assert_eq!(keys(&page), props("SearchPage"));
    let item_extra: BTreeSet<String> = doc["components"]["schemas"]["SearchItem"]["allOf"][1]
        ["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut item_props = props("Entry");
    item_props.extend(item_extra);
    assert_eq!(keys(&page["items"][0]), item_props);
    let hit = f.get("/api/v1/recordings?text=refund").await.json();
    assert_eq!(keys(&hit["items"][0]["snippets"][0]), props("Snippet"));
    let t = f.get("/api/v1/recordings/c1/transcript").await.json();
    assert_eq!(keys(&t), props("Transcript"));
    assert_eq!(keys(&t["phrases"][0]), props("TranscriptPhrase"));
    let peaks = f.get("/api/v1/recordings/c1/peaks").await.json();
    assert_eq!(keys(&peaks), props("Peaks"));
    let list = f.get("/api/v1/statements/terms").await.json();
    assert_eq!(keys(&list), props("StatementList"));
}

/// The API merged into a router like the HTTP server's keeps its own fallback.
#[tokio::test]
async fn merged_into_the_servers_router() {
    let f = Fixture::new().await;
    let app: Router = Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .merge(f.app.clone());
    let req = |uri: &str| {
        Request::builder()
            .uri(uri)
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))))
            .body(Body::empty())
            .unwrap()
    };
    let r = app.clone().oneshot(req("/api/v1/nope")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"],
        "no such endpoint"
    );
    let r = app.clone().oneshot(req("/health")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.oneshot(req("/api/v1/recordings/c1")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
