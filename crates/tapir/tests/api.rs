//! The recordings API through the real binary: SIPp calls with an agent, team, queue and
//! customer number are found by agent, number and time; a Range request returns exactly the
//! asked bytes of the file in the storage directory; the audio is whole, suffixed or 416 as
//! asked; either leg's Call-ID finds its recording; a recorded statement is found by its id
//! and served; the peaks are served; delete and legal hold behave and are logged without
//! numbers; requests are counted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tapir_tests::{free_port, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");

/// An HTTP answer, body as bytes.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), read to the end.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let a = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    if a.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    } else if let Some(n) = a.header("content-length") {
        assert_eq!(
            body.len(),
            n.parse::<usize>().unwrap(),
            "{method} {path}: body length differs from Content-Length"
        );
    }
    Answer { body, ..a }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        b = &b[eol + 2..];
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[..n]);
        b = &b[n + 2..];
    }
}

fn get(t: &Tapir, path: &str) -> Answer {
    request(t.http, "GET", path, &[])
}

fn ids(t: &Tapir, query: &str) -> Vec<String> {
    let a = get(t, &format!("/api/v1/recordings?{query}"));
    assert_eq!(
        a.status,
        200,
        "{query}: {}",
        String::from_utf8_lossy(&a.body)
    );
    a.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["contact_id"].as_str().unwrap().to_string())
        .collect()
}

fn wait_until<T>(what: &str, t: &Tapir, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what} never happened\n{}", t.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Files named `name` anywhere under `dir`.
fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == name) {
                out.push(p);
            }
        }
    }
    out
}

/// The stored file of `key`, found by walking the storage directory.
fn stored_file(t: &Tapir, key: &str) -> Vec<u8> {
    let name = key.rsplit('/').next().unwrap();
    let found = find(&t.dir.path().join("recordings"), name);
    assert_eq!(found.len(), 1, "{key}: {found:?}");
    assert!(found[0].ends_with(key), "{:?} is not at {key}", found[0]);
    std::fs::read(&found[0]).unwrap()
}

/// One call of `agent` (team, queue) from `number`, `ms` long. With `statement`, the flow
/// records a statement with that id through the control API during the call.
fn call(t: &Tapir, callee_port: u16, facts: [&str; 4], ms: u32, statement: Option<&'static str>) {
    let [agent, team, queue, number] = facts;
    let http = t.http;
    let flow = statement.map(|sid| {
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(10);
            let id = loop {
                let a = request(http, "GET", "/calls", &[]);
                let body = String::from_utf8_lossy(&a.body).into_owned();
                let id = body
                    .trim_matches(|c| c == '[' || c == ']')
                    .trim()
                    .to_string();
                if !id.is_empty() {
                    break id;
                }
                assert!(Instant::now() < end, "the call never appeared");
                std::thread::sleep(Duration::from_millis(20));
            };
            // The statement is recorded from about 0.5 s into the call for about 1 s.
            std::thread::sleep(Duration::from_millis(500));
            let path = format!("/calls/{id}/directive/statement-start;id={sid}");
            let start = request(http, "POST", &path, &[]).status;
            std::thread::sleep(Duration::from_millis(1000));
            let path = format!("/calls/{id}/directive/statement-stop");
            (start, request(http, "POST", &path, &[]).status)
        })
    });
    let d = ms.to_string();
    tapir_tests::call(
        t,
        (
            "uac_tone_agent.xml",
            Some(400.0),
            &[
                "-d", &d, "-key", "agent", agent, "-key", "team", team, "-key", "queue", queue,
                "-key", "number", number,
            ],
        ),
        ("uas_tone.xml", Some(1000.0), &[]),
        callee_port,
    );
    if let Some(f) = flow {
        assert_eq!(f.join().unwrap(), (204, 204));
    }
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[test]
fn calls_are_found_served_by_range_looked_up_and_deleted_through_the_api() {
    let callee_port = free_port("127.0.0.1");
    let route = format!(
        "[[routes]]\nname = \"rec\"\ntarget = \"sip:127.0.0.1:{callee_port}\"\ncustomer = \"caller\"\n\
         direction = \"inbound\"\nrecord = \"always\"\n"
    );
    let t = Tapir::start(BIN, &route, TapirOptions::default());
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    call(
        &t,
        callee_port,
        ["anna", "complaints", "q1", "+4930111"],
        1500,
        None,
    );
    call(
        &t,
        callee_port,
        ["bert", "sales", "q2", "+4940222"],
        2500,
        Some("terms-77"),
    );
    // Both recordings and the statement reach storage.
    let all = wait_until("two stored recordings", &t, Duration::from_secs(30), || {
        let v = ids(&t, "state=stored");
        (v.len() == 2).then_some(v)
    });
    let statement = wait_until("the stored statement", &t, Duration::from_secs(30), || {
        let a = get(&t, "/api/v1/statements/terms-77");
        let j = (a.status == 200).then(|| a.json())?;
        (j["items"][0]["state"] == "stored").then_some(j)
    });
    // Newest first: bert's call was the second.
    let (bert, anna) = (all[0].clone(), all[1].clone());

    // Found by agent, team, queue, number, time, duration, statement.
    assert_eq!(ids(&t, "agent=anna"), [anna.as_str()]);
    assert_eq!(ids(&t, "agent=bert&team=sales&queue=q2"), [bert.as_str()]);
    assert_eq!(ids(&t, "queue=q1"), [anna.as_str()]);
    assert_eq!(ids(&t, "number=%2B4930"), [anna.as_str()]);
    assert_eq!(ids(&t, "number=%2B4940222"), [bert.as_str()]);
    assert!(ids(&t, "number=%2B33").is_empty());
    assert_eq!(
        ids(&t, "direction=inbound&sort=start_asc"),
        [anna.as_str(), bert.as_str()]
    );
    assert_eq!(ids(&t, "has_statement=true"), [bert.as_str()]);
    assert_eq!(ids(&t, "min_duration=2"), [bert.as_str()]);
    assert_eq!(ids(&t, &format!("from={before_ms}")).len(), 2);
    assert!(ids(&t, &format!("to={before_ms}")).is_empty());
    assert!(ids(&t, "from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z").is_empty());
    let entry = get(&t, &format!("/api/v1/recordings/{anna}")).json();
    let anna_start = entry["start_ms"].as_i64().unwrap();
    assert_eq!(
        ids(&t, &format!("from={anna_start}&to={}", anna_start + 1)),
        [anna.as_str()]
    );
    assert_eq!(entry["customer_number"], "+4930111");
    assert_eq!(entry["team"], "complaints");
    assert!(!entry["segments"].as_array().unwrap().is_empty());
    let a = get(&t, "/api/v1/recordings?min_duration=long");
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["param"], "min_duration");

    // The audio: exactly the asked bytes of the file in the storage directory.
    let key = entry["storage_key"].as_str().unwrap();
    let file = stored_file(&t, key);
    let size = file.len();
    assert!(size > 20_000, "{size} bytes");
    assert_eq!(entry["size_bytes"], size as u64);
    let audio = format!("/api/v1/recordings/{anna}/audio");
    let a = request(t.http, "GET", &audio, &[("Range", "bytes=1000-10999")]);
    assert_eq!(a.status, 206);
    assert_eq!(a.body, &file[1000..11_000]);
    assert_eq!(
        a.header("content-range"),
        Some(format!("bytes 1000-10999/{size}").as_str())
    );
    assert_eq!(a.header("content-type"), Some("audio/wav"));
    assert_eq!(a.header("accept-ranges"), Some("bytes"));
    let a = request(t.http, "GET", &audio, &[("Range", "bytes=-777")]);
    assert_eq!(a.status, 206);
    assert_eq!(a.body, &file[size - 777..]);
    let a = request(
        t.http,
        "GET",
        &audio,
        &[("Range", &format!("bytes={size}-"))],
    );
    assert_eq!(a.status, 416);
    assert_eq!(
        a.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    let a = get(&t, &format!("{audio}?download=1"));
    assert_eq!(a.status, 200);
    assert_eq!(a.body, file);
    assert_eq!(
        a.header("etag"),
        Some(format!("\"{}\"", sha256(&file)).as_str())
    );
    assert!(a
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));
    let peaks = get(&t, &format!("/api/v1/recordings/{anna}/peaks")).json();
    assert!(peaks["duration"].as_f64().unwrap() > 1.0, "{peaks}");
    assert_eq!(peaks["peaks"].as_array().unwrap().len(), 2);

    // Either leg's Call-ID finds the recording (percent-encoded or not).
    for leg in ["call_id_customer", "call_id_agent"] {
        let cid = entry[leg].as_str().unwrap();
        assert!(cid.contains('@') || !cid.is_empty());
        let enc: String = cid
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let a = get(&t, &format!("/api/v1/calls/{enc}/recording"));
        assert_eq!(a.status, 200, "{leg} {cid}");
        assert_eq!(a.json()["contact_id"], anna.as_str());
    }
    assert_eq!(
        get(&t, "/api/v1/calls/nobody@nowhere/recording").status,
        404
    );

    // The statement, by the id the flow gave it: its contact and its stored file.
    let item = &statement["items"][0];
    assert_eq!(item["contact_id"], bert.as_str());
    let st_file = stored_file(&t, item["storage_key"].as_str().unwrap());
    let a = get(&t, "/api/v1/statements/terms-77/audio");
    assert_eq!(a.status, 200);
    assert_eq!(a.body, st_file);
    let a = request(
        t.http,
        "GET",
        "/api/v1/statements/terms-77/audio",
        &[("Range", "bytes=44-143")],
    );
    assert_eq!(a.status, 206);
    assert_eq!(a.body, &st_file[44..144]);
    let bert_entry = get(&t, &format!("/api/v1/recordings/{bert}")).json();
    assert_eq!(bert_entry["statements"][0]["statement_id"], "terms-77");

    // Legal hold blocks the delete; released, the delete hides the recording.
    let hold = format!("/api/v1/recordings/{anna}/hold");
    let rec = format!("/api/v1/recordings/{anna}");
    assert_eq!(request(t.http, "PUT", &hold, &[]).status, 204);
    assert_eq!(get(&t, &rec).json()["legal_hold"], true);
    let a = request(t.http, "DELETE", &rec, &[]);
    assert_eq!(
        (a.status, a.json()["error"].clone()),
        (409, "legal hold".into())
    );
    assert_eq!(request(t.http, "DELETE", &hold, &[]).status, 204);
    assert_eq!(request(t.http, "DELETE", &rec, &[]).status, 204);
    for path in [&rec, &audio] {
        let a = get(&t, path);
        assert_eq!(
            (a.status, a.json()["error"].clone()),
            (404, "deleted".into())
        );
    }
    assert!(ids(&t, "agent=anna").is_empty());
    assert_eq!(ids(&t, ""), [bert.as_str()]);
    let a = request(t.http, "DELETE", &rec, &[]);
    assert_eq!(
        (a.status, a.json()["error"].clone()),
        (404, "deleted".into())
    );
    assert_eq!(
        request(t.http, "DELETE", "/api/v1/recordings/nope", &[]).status,
        404
    );
    // The deletion is logged with the contact id, without the customer's number.
    // The log is read from tapir's stderr by another thread: wait for the line.
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let log = t.log();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("recording deleted through the API"))
        {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no deletion line in\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(line.contains(&anna), "{line}");
    assert!(!line.contains("4930111"), "{line}");

    // The OpenAPI document is served, and the requests were counted.
    let doc = get(&t, "/api/v1/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        t.metric("tapir_api_requests_total{endpoint=\"GET /recordings\",status=\"200\"}") >= 10.0
    );
    assert_eq!(
        t.metric(
            "tapir_api_requests_total{endpoint=\"DELETE /recordings/{contact_id}\",status=\"204\"}"
        ),
        1.0
    );
    assert!(
        t.metric("tapir_api_requests_total{endpoint=\"GET /recordings/{contact_id}/audio\",status=\"206\"}")
            >= 2.0
    );
}
