//! Writes the PCMA tone pcap that SIPp's `play_pcap_audio` plays in the black-box scripts
//! (deploy/two-nodes.sh), the same one the Rust tests write with
//! [`tapir_tests::write_tone_pcap`].
//!
//! ```text
//! tapir-tone-pcap OUT.pcap [SECONDS] [HZ]     (defaults: 10 s of 440 Hz)
//! ```

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next() else {
        eprintln!("usage: tapir-tone-pcap OUT.pcap [SECONDS] [HZ]");
        std::process::exit(2)
    };
    let secs: f64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(10.0);
    let hz: f64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(440.0);
    tapir_tests::write_tone_pcap(std::path::Path::new(&out), hz, secs);
}
