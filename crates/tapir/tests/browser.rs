//! The review pages in a real browser: headless Chromium (Debian's, over chromedriver) logs
//! in, searches, opens the recording of a SIPp call made through the binary in this test,
//! plays it, seeks with −10 s and +30 s (buttons and keys) and a `?t=` link, changes the
//! speed, and the audio element's `currentTime` and `playbackRate` say it happened. The
//! waveform comes from the stored peaks (the page fetches no audio to decode); a click on a
//! phrase of the transcript pane seeks to it. A screenshot
//! of the recording page is kept under `target/test-artifacts/`.

use std::time::Duration;

use tapir_tests::browser::fantoccini::Locator;
use tapir_tests::browser::{artifacts_dir, Browser};
use tapir_tests::site::{agent_call, recording_route, Site, PASSWORD};
use tapir_tests::{free_port, Tapir, TapirOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tapir");
/// The recorded call's length: long enough that +30 s from 5 s stays inside it.
const CALL_MS: u32 = 42_000;

#[test]
fn a_browser_logs_in_searches_plays_seeks_and_changes_the_speed() {
    // Chromium first: without it there is nothing to test (and the test fails saying so).
    let b = Browser::start();
    let callee = free_port("127.0.0.1");
    let engine = fake_transcription_server();
    let t = Tapir::start(
        BIN,
        &recording_route(callee),
        TapirOptions {
            extra: format!(
                "[access]\nenabled = true\n[transcripts]\nengine = \"http\"\nurl = \"http://{engine}\"\nmodel = \"whisper-test\"\n"
            ),
            ..Default::default()
        },
    );
    let site = Site {
        t,
        bin: BIN.to_string(),
    };
    site.add_user("anna", "agent", &["--agent-id", "anna"]);
    agent_call(&site.t, callee, "anna", "sales", "+4930111", CALL_MS);
    let anna = site.login("anna");
    let id = site.wait_stored(&anna, 1, Duration::from_secs(60))[0].clone();
    let base = format!("http://{}", site.t.http);
    let secs = Duration::from_secs;

    // Not logged in: the list sends the browser to the login page.
    b.block_on(b.client.goto(&format!("{base}/recordings")))
        .unwrap();
    b.wait_js(
        "the login page",
        "location.pathname === '/login' && !!document.querySelector('input[name=username]')",
        secs(10),
    );
    b.block_on(async {
        let c = &b.client;
        c.find(Locator::Css("input[name=username]"))
            .await?
            .send_keys("anna")
            .await?;
        c.find(Locator::Css("input[name=password]"))
            .await?
            .send_keys(PASSWORD)
            .await?;
        c.find(Locator::Css("section.login button[type=submit]"))
            .await?
            .click()
            .await
    })
    .unwrap();
    b.wait_js(
        "the list after the login",
        "location.pathname === '/recordings' && !!document.querySelector('#search')",
        secs(10),
    );

    // Search by agent and number (the form's empty fields are not sent).
    b.block_on(async {
        let c = &b.client;
        c.find(Locator::Css("#search input[name=agent]"))
            .await?
            .send_keys("anna")
            .await?;
        c.find(Locator::Css("#search input[name=number]"))
            .await?
            .send_keys("+4930")
            .await?;
        c.find(Locator::Css("#search button[type=submit]"))
            .await?
            .click()
            .await
    })
    .unwrap();
    let search = b.wait_js(
        "the search's results",
        "location.search.includes('agent=anna') && document.querySelectorAll('table.list tbody tr').length === 1 && location.search",
        secs(10),
    );
    let search = search.as_str().unwrap().to_string();
    assert!(
        !search.contains("team="),
        "empty fields are not sent: {search}"
    );
    assert!(search.contains("number=%2B4930"), "{search}");
    // Times are shown in the browser's zone by the script (the server's UTC text is kept
    // as the title).
    let time = b.js("(t => [t.title, t.textContent])(document.querySelector('table.list time'))");
    assert!(time[0].as_str().unwrap().ends_with(" UTC"), "{time}");
    assert_ne!(time[0], time[1], "localized: {time}");

    // Open the recording, at 15 s by its link.
    b.block_on(b.client.goto(&format!("{base}/recordings/{id}?t=15")))
        .unwrap();
    b.wait_js(
        "the waveform from the stored peaks",
        "document.querySelector('#player').dataset.waveform === 'ready'",
        secs(20),
    );
    b.wait_js(
        "the audio's length",
        "document.querySelector('#audio').readyState >= 1",
        secs(20),
    );
    let at = b.wait_js("the seek of ?t=15", "Math.abs(document.querySelector('#audio').currentTime - 15) < 0.01 && document.querySelector('#audio').currentTime", secs(10));
    assert!((at.as_f64().unwrap() - 15.0).abs() < 0.01, "{at}");
    let duration = b
        .js("document.querySelector('#audio').duration")
        .as_f64()
        .unwrap();
    assert!(
        (duration - f64::from(CALL_MS) / 1000.0).abs() < 1.5,
        "duration {duration}"
    );

    // Play.
    b.block_on(async { b.client.find(Locator::Css("#play")).await?.click().await })
        .unwrap();
    b.wait_js("playback", "!document.querySelector('#audio').paused && document.querySelector('#audio').currentTime > 15.2", secs(10));
    assert_eq!(b.js("document.querySelector('#play').textContent"), "Pause");

    let now = || {
        b.js("document.querySelector('#audio').currentTime")
            .as_f64()
            .unwrap()
    };
    let click = |sel: &str| {
        b.block_on(async { b.client.find(Locator::Css(sel)).await?.click().await })
            .unwrap()
    };
    // −10 s.
    let before = now();
    click("#back");
    let after = now();
    assert!(
        (after - (before - 10.0)).abs() < 0.75,
        "−10 s: {before} → {after}"
    );
    // +30 s.
    let before = now();
    click("#fwd");
    let after = now();
    assert!(
        (after - (before + 30.0)).abs() < 0.75,
        "+30 s: {before} → {after}"
    );
    assert!(after < duration, "{after} within {duration}");

    // The speed.
    b.block_on(async {
        b.client
            .find(Locator::Css("#speed"))
            .await?
            .select_by_value("1.5")
            .await
    })
    .unwrap();
    b.wait_js(
        "the speed",
        "document.querySelector('#audio').playbackRate === 1.5",
        secs(5),
    );
    assert_eq!(b.js("document.querySelector('#audio').playbackRate"), 1.5);

    // The keys: ← back 10 s, space pauses; not while typing in a field.
    let before = now();
    b.block_on(async {
        b.client
            .find(Locator::Css("body"))
            .await?
            .send_keys("\u{E012}")
            .await
    })
    .unwrap();
    let after = now();
    assert!(
        (after - (before - 10.0)).abs() < 0.75,
        "←: {before} → {after}"
    );
    b.block_on(async {
        b.client
            .find(Locator::Css("body"))
            .await?
            .send_keys(" ")
            .await
    })
    .unwrap();
    b.wait_js(
        "space pauses",
        "document.querySelector('#audio').paused",
        secs(5),
    );
    let paused_at = now();
    b.block_on(async {
        b.client
            .find(Locator::Css("#keyword"))
            .await?
            .send_keys(" \u{E012}")
            .await
    })
    .ok();
    assert!(
        (now() - paused_at).abs() < 0.01,
        "keys typed into a field do not seek"
    );

    // A click on the waveform seeks (wavesurfer drives the same <audio>).
    b.block_on(async {
        let w = b.client.find(Locator::Css("#waveform")).await?;
        w.click().await
    })
    .unwrap();
    let mid = b.wait_js("the click on the waveform", "Math.abs(document.querySelector('#audio').currentTime - document.querySelector('#audio').duration / 2) < 2 && document.querySelector('#audio').currentTime", secs(5));
    assert!(mid.as_f64().unwrap() > 5.0);

    // The waveform came from the peaks; the audio was never fetched for decoding.
    let fetched = b.js(
        "performance.getEntriesByType('resource').filter(e => e.initiatorType === 'fetch').map(e => new URL(e.name).pathname)",
    );
    let fetched: Vec<String> = serde_json::from_value(fetched).unwrap();
    assert!(fetched.iter().any(|p| p.ends_with("/peaks")), "{fetched:?}");
    assert!(
        !fetched.iter().any(|p| p.ends_with("/audio")),
        "{fetched:?}"
    );
    // The transcript pane: once the call is transcribed (by a fake OpenAI-compatible engine),
    // the page shows its phrases and a click on one moves the audio to it.
    let deadline = std::time::Instant::now() + secs(60);
    loop {
        let r = site.get(&format!("/api/v1/recordings/{id}/transcript"), Some(&anna));
        if r.status == 200 && r.json()["state"] == "done" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no transcript: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.block_on(b.client.goto(&format!("{base}/recordings/{id}")))
        .unwrap();
    b.wait_js(
        "the transcript's phrases",
        "!document.querySelector('#transcript').hidden && document.querySelectorAll('#phrases li[data-start-ms]').length >= 2 && document.querySelector('#audio').readyState >= 1",
        secs(10),
    );
    assert!(b
        .js("document.querySelector('#phrases').textContent")
        .as_str()
        .unwrap()
        .contains("the refund arrives tomorrow"));
    click("#phrases li[data-start-ms='12000']");
    let at = b.wait_js(
        "the click on a phrase",
        "Math.abs(document.querySelector('#audio').currentTime - 12) < 0.01 && document.querySelector('#audio').currentTime",
        secs(5),
    );
    assert!((at.as_f64().unwrap() - 12.0).abs() < 0.01);
    // "Copy link at current time" shows a link that carries the time.
    click("#copy-link");
    let link = b.js("document.querySelector('#link').value");
    assert!(
        link.as_str()
            .unwrap()
            .contains(&format!("/recordings/{id}?t=")),
        "{link}"
    );

    let shot = b.screenshot(
        &artifacts_dir(env!("CARGO_TARGET_TMPDIR")),
        "recording-page.png",
    );
    println!("screenshot of the recording page: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}

/// A stand-in for an OpenAI-compatible transcription server: every request gets the same two
/// phrases (at 1 s and at 12 s, inside the 20 s of speech) in `verbose_json`. Returns its address.
fn fake_transcription_server() -> std::net::SocketAddr {
    use axum::routing::post;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = serde_json::json!({
        "task": "transcribe", "language": "english",
        "text": "thank you for calling the refund arrives tomorrow",
        "segments": [
            {"id": 0, "start": 1.0, "end": 3.0, "text": "thank you for calling"},
            {"id": 1, "start": 12.0, "end": 15.0, "text": "the refund arrives tomorrow"},
        ],
    })
    .to_string();
    let app = axum::Router::new()
        .route(
            "/v1/audio/transcriptions",
            post(move |_body: axum::body::Bytes| {
                let answer = answer.clone();
                async move { ([("content-type", "application/json")], answer) }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::disable());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app).await.unwrap();
            });
    });
    addr
}
