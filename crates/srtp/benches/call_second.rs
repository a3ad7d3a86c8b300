//! CPU that SRTP adds to one second of a recorded call with both legs encrypted.
//!
//! A call-second through tapir carries 50 packets each way (20 ms PCMA/PCMU, 172-byte RTP).
//! With SRTP on both legs every packet is unprotected on the leg it arrives on and protected
//! toward the other one, so a call-second costs 100 unprotects and 100 protects, plus the
//! relay's copy of each packet into its send buffer. This measures exactly that work, per
//! suite, on contexts keyed as the relay keys them, and prints microseconds of CPU per
//! call-second: add it to the plain recorded figure of `bench/recorded.sh wav` (milliseconds
//! per call-second) for the SRTP figure. SRTCP (one packet per few seconds) is left out.
//!
//! Run with `cargo bench -p srtp --bench call_second` (`SECONDS=N` call-seconds, default
//! 20,000).

use srtp::{Context, Keying, MasterKey, Suite, MAX_RTP_TRAILER};

fn context(suite: Suite, fill: u8) -> Context {
    let key = vec![fill; suite.master_len()];
    Context::new(&Keying::new(MasterKey::new(suite, &key).unwrap())).unwrap()
}

/// Thread CPU time in nanoseconds: the loop is single-threaded and CPU-bound.
fn cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec the call fills.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: say so, measure nothing.
    if !std::env::args().any(|a| a == "--bench") {
        println!("call_second: not measuring (run `cargo bench -p srtp --bench call_second`)");
        return;
    }
    let seconds: u32 = std::env::var("SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    println!("call-seconds={seconds} (50 packets each way per call-second, 172-byte RTP)");
    for suite in [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes128Gcm,
    ] {
        // Each direction: the sender's context, tapir's inbound context for that leg, tapir's
        // outbound context for the other leg, and the far party's receiving context.
        let mut senders = [context(suite, 1), context(suite, 2)];
        let mut tapir_in = [context(suite, 1), context(suite, 2)];
        let mut tapir_out = [context(suite, 3), context(suite, 4)];
        let mut wire = [0u8; 2048];
        let mut out = [0u8; 2048 + MAX_RTP_TRAILER];
        let mut seq = 0u16;
        let mut tapir_ns = 0u128;
        for _ in 0..seconds {
            for _ in 0..50 {
                seq = seq.wrapping_add(1);
                for dir in 0..2 {
                    wire[0] = 0x80;
                    wire[1] = 8;
                    wire[2..4].copy_from_slice(&seq.to_be_bytes());
                    wire[8..12].copy_from_slice(&(0x1000 + dir as u32).to_be_bytes());
                    wire[12..172].fill(0xd5);
                    let n = senders[dir].protect_rtp(&mut wire, 172).unwrap();
                    // tapir's share: unprotect in place, copy, protect toward the other leg.
                    let t0 = cpu_ns();
                    let plain = tapir_in[dir].unprotect_rtp(&mut wire[..n]).unwrap();
                    out[..plain].copy_from_slice(&wire[..plain]);
                    let m = tapir_out[dir].protect_rtp(&mut out, plain).unwrap();
                    tapir_ns += cpu_ns() - t0;
                    std::hint::black_box(&out[..m]);
                }
            }
        }
        // The two clock reads per packet are part of tapir_ns: measure and subtract them.
        let probes = u128::from(seconds) * 100;
        let t0 = cpu_ns();
        for _ in 0..probes {
            std::hint::black_box(cpu_ns());
        }
        let clock_ns = (cpu_ns() - t0) / probes;
        let per_call_second_us =
            (tapir_ns.saturating_sub(clock_ns * probes)) as f64 / f64::from(seconds) / 1000.0;
        println!(
            "suite={suite} srtp_us_per_call_second={per_call_second_us:.1} \
             ns_per_packet={:.0} (unprotect + copy + protect)",
            per_call_second_us * 1000.0 / 100.0
        );
    }
}
