//! Prometheus metrics: one registry, registered once, rendered on `/metrics`.

use prometheus::{
    Counter, Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub calls_active: IntGauge,
    pub calls_total: IntCounterVec,
    pub sip_in: IntCounter,
    pub sip_out: IntCounter,
    pub sip_parse_errors: IntCounter,
    pub sip_retransmissions: IntCounter,
    pub sip_rate_limited: IntCounter,
    pub sip_keepalives: IntCounter,
    pub rtp_relayed: IntCounterVec,
    pub rtp_dropped: IntCounterVec,
    pub tap_dropped: IntCounter,
    pub recordings_total: IntCounterVec,
    pub recordings_active: IntGauge,
    pub recordings_finishing: IntGauge,
    pub policy_reloads: IntCounterVec,
    pub announcements: IntCounterVec,
    pub announcement_packets: IntCounter,
    pub srtp_dropped: IntCounterVec,
    pub calls_encrypted: IntCounter,
    pub tls_handshake_failures: IntCounterVec,
    pub api_requests: IntCounterVec,
    pub page_requests: IntCounterVec,
    pub shelf: ShelfMetrics,
    pub transcripts: TranscriptMetrics,
}

/// The way of finished recordings to storage: uploads, the spool, purges, webhooks.
pub struct ShelfMetrics {
    pub uploads: IntCounterVec,
    pub uploads_pending: IntGauge,
    pub spool_bytes: IntGauge,
    pub refused: IntCounter,
    pub quarantined: IntCounter,
    pub purged: IntCounter,
    pub webhooks: IntCounterVec,
}

/// The transcription stage (transcribe.rs).
pub struct TranscriptMetrics {
    pub total: IntCounterVec,
    pub jobs: IntGaugeVec,
    pub audio_seconds: Counter,
    pub processing_seconds: Counter,
    pub cpu_seconds: Counter,
}

impl TranscriptMetrics {
    fn new(registry: &Registry) -> Self {
        let m = TranscriptMetrics {
            total: IntCounterVec::new(
                Opts::new(
                    "tapir_transcripts_total",
                    "Transcription jobs' ends of attempts: done, retried (another attempt queued) or failed for good",
                ),
                &["outcome"],
            )
            .unwrap(),
            jobs: IntGaugeVec::new(
                Opts::new(
                    "tapir_transcript_jobs",
                    "Transcription jobs of this node, by state (queued, running)",
                ),
                &["state"],
            )
            .unwrap(),
            audio_seconds: Counter::new(
                "tapir_transcript_audio_seconds_total",
                "Seconds of recordings transcribed",
            )
            .unwrap(),
            processing_seconds: Counter::new(
                "tapir_transcript_processing_seconds_total",
                "Wall time of transcription attempts (fetch, recognise, store)",
            )
            .unwrap(),
            cpu_seconds: Counter::new(
                "tapir_transcript_cpu_seconds_total",
                "CPU time of the offline transcription engine's worker threads",
            )
            .unwrap(),
        };
        for o in ["done", "retried", "failed"] {
            m.total.with_label_values(&[o]);
        }
        for st in ["queued", "running"] {
            m.jobs.with_label_values(&[st]);
        }
        for c in [
            Box::new(m.total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.jobs.clone()),
            Box::new(m.audio_seconds.clone()),
            Box::new(m.processing_seconds.clone()),
            Box::new(m.cpu_seconds.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        m
    }
}

impl ShelfMetrics {
    fn new(registry: &Registry) -> Self {
        let m = ShelfMetrics {
            uploads: IntCounterVec::new(
                Opts::new(
                    "tapir_uploads_total",
                    "Recordings delivered to storage (ok), or kept back because the file is unreadable (error)",
                ),
                &["result"],
            )
            .unwrap(),
            uploads_pending: IntGauge::new(
                "tapir_uploads_pending",
                "Finished recordings waiting in the spool's outbox for storage",
            )
            .unwrap(),
            spool_bytes: IntGauge::new(
                "tapir_spool_bytes",
                "Bytes in the spool (recordings being written and waiting for storage)",
            )
            .unwrap(),
            refused: IntCounter::new(
                "tapir_recordings_refused_total",
                "Recordings not started because the spool is past its high-water mark (the calls went on)",
            )
            .unwrap(),
            quarantined: IntCounter::new(
                "tapir_spool_quarantined_total",
                "Files moved to the spool's quarantine because they could not be delivered",
            )
            .unwrap(),
            purged: IntCounter::new(
                "tapir_recordings_purged_total",
                "Recordings whose audio the retention job removed from storage",
            )
            .unwrap(),
            webhooks: IntCounterVec::new(
                Opts::new(
                    "tapir_webhooks_total",
                    "Webhook delivery attempts, by result (delivered, failed)",
                ),
                &["result"],
            )
            .unwrap(),
        };
        for c in [
            Box::new(m.uploads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.uploads_pending.clone()),
            Box::new(m.spool_bytes.clone()),
            Box::new(m.refused.clone()),
            Box::new(m.quarantined.clone()),
            Box::new(m.purged.clone()),
            Box::new(m.webhooks.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        m
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let calls_active = IntGauge::new("tapir_calls_active", "Calls in progress").unwrap();
        let calls_total = IntCounterVec::new(
            Opts::new("tapir_calls_total", "Calls ended, by outcome"),
            &["outcome"],
        )
        .unwrap();
        let sip_in =
            IntCounter::new("tapir_sip_messages_in_total", "SIP messages received").unwrap();
        let sip_out = IntCounter::new("tapir_sip_messages_out_total", "SIP messages sent").unwrap();
        let sip_parse_errors = IntCounter::new(
            "tapir_sip_parse_errors_total",
            "SIP messages that failed to parse or validate",
        )
        .unwrap();
        let sip_retransmissions = IntCounter::new(
            "tapir_sip_retransmissions_total",
            "SIP retransmissions sent by tapir's transactions",
        )
        .unwrap();
        let sip_rate_limited = IntCounter::new(
            "tapir_sip_rate_limited_total",
            "SIP requests refused or dropped by the per-source rate limit",
        )
        .unwrap();
        let sip_keepalives = IntCounter::new(
            "tapir_sip_keepalives_total",
            "CRLF keep-alives received (RFC 5626): pings on TCP, CRLF datagrams on UDP",
        )
        .unwrap();
        let rtp_relayed = IntCounterVec::new(
            Opts::new(
                "tapir_rtp_packets_relayed_total",
                "RTP/RTCP packets relayed, by the leg they came from",
            ),
            &["from"],
        )
        .unwrap();
        let rtp_dropped = IntCounterVec::new(
            Opts::new(
                "tapir_rtp_packets_dropped_total",
                "RTP/RTCP packets dropped, by reason",
            ),
            &["reason"],
        )
        .unwrap();
        let tap_dropped = IntCounter::new(
            "tapir_tap_dropped_total",
            "Packets not offered to the recorder because its queue was full",
        )
        .unwrap();
        let recordings_total = IntCounterVec::new(
            Opts::new("tapir_recordings_total", "Recordings finished, by result"),
            &["result"],
        )
        .unwrap();
        let recordings_active =
            IntGauge::new("tapir_recordings_active", "Recordings being written").unwrap();
        let recordings_finishing = IntGauge::new(
            "tapir_recordings_finishing",
            "Recordings ended and not yet handed to storage (metrics, peaks, MP3 transcode)",
        )
        .unwrap();
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "tapir_policy_reloads_total",
                "Policy file changes, by result",
            ),
            &["result"],
        )
        .unwrap();
        let announcements = IntCounterVec::new(
            Opts::new(
                "tapir_announcements_total",
                "Recording announcements played, by result (played, consent_granted, consent_refused, consent_no_answer)",
            ),
            &["result"],
        )
        .unwrap();
        let announcement_packets = IntCounter::new(
            "tapir_announcement_packets_total",
            "RTP packets of announcements sent",
        )
        .unwrap();
        let srtp_dropped = IntCounterVec::new(
            Opts::new(
                "tapir_srtp_packets_dropped_total",
                "SRTP/SRTCP packets dropped, by reason (auth_failed, replayed, too_old, key_expired, bad_mki, no_key, malformed, protect_failed)",
            ),
            &["reason"],
        )
        .unwrap();
        let calls_encrypted = IntCounter::new(
            "tapir_calls_encrypted_unrecorded_total",
            "Calls relayed with media tapir cannot decrypt, and so not recorded",
        )
        .unwrap();
        let tls_handshake_failures = IntCounterVec::new(
            Opts::new(
                "tapir_tls_handshake_failures_total",
                "TLS handshakes that failed, by side (in: a SIP peer connecting to tapir, out: tapir connecting to a target, https: a client of the HTTPS listener)",
            ),
            &["side"],
        )
        .unwrap();
        let api_requests = IntCounterVec::new(
            Opts::new(
                "tapir_api_requests_total",
                "Requests to the recordings API (/api/v1), by endpoint (method and route, or unknown) and status",
            ),
            &["endpoint", "status"],
        )
        .unwrap();
        let page_requests = IntCounterVec::new(
            Opts::new(
                "tapir_page_requests_total",
                "Requests to the review pages and their assets, by page and status",
            ),
            &["page", "status"],
        )
        .unwrap();
        for c in [
            Box::new(tls_handshake_failures.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(api_requests.clone()),
            Box::new(page_requests.clone()),
            Box::new(srtp_dropped.clone()),
            Box::new(calls_encrypted.clone()),
            Box::new(policy_reloads.clone()),
            Box::new(announcements.clone()),
            Box::new(announcement_packets.clone()),
            Box::new(calls_active.clone()),
            Box::new(calls_total.clone()),
            Box::new(sip_in.clone()),
            Box::new(sip_out.clone()),
            Box::new(sip_parse_errors.clone()),
            Box::new(sip_retransmissions.clone()),
            Box::new(sip_rate_limited.clone()),
            Box::new(sip_keepalives.clone()),
            Box::new(rtp_relayed.clone()),
            Box::new(rtp_dropped.clone()),
            Box::new(tap_dropped.clone()),
            Box::new(recordings_total.clone()),
            Box::new(recordings_active.clone()),
            Box::new(recordings_finishing.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        let shelf = ShelfMetrics::new(&registry);
        let transcripts = TranscriptMetrics::new(&registry);
        Self {
            shelf,
            transcripts,
            registry,
            calls_active,
            calls_total,
            sip_in,
            sip_out,
            sip_parse_errors,
            sip_retransmissions,
            sip_rate_limited,
            sip_keepalives,
            rtp_relayed,
            rtp_dropped,
            tap_dropped,
            recordings_total,
            recordings_active,
            recordings_finishing,
            policy_reloads,
            announcements,
            announcement_packets,
            srtp_dropped,
            calls_encrypted,
            tls_handshake_failures,
            api_requests,
            page_requests,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
