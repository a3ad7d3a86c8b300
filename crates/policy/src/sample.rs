//! Deterministic sampling for percentage policies.
//!
//! A call is in a policy's sample when a stable hash of its contact id, salted with the policy
//! name, falls below the percentage. The hash is FNV-1a (64 bit) followed by a 64-bit finalizer
//! so that sequential ids (`call-1`, `call-2`, ...) spread evenly; both are fixed algorithms, so
//! the same call is decided the same way on every node, after every restart and in every rerun.
//! Renaming a policy reshuffles its sample.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Resolution of sampling: percentages are compared in hundredths of a percent.
pub const BUCKETS: u32 = 10_000;

/// 64-bit FNV-1a over a sequence of byte strings, each followed by a 0xff separator so that
/// `("ab", "c")` and `("a", "bc")` hash differently.
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        h ^= 0xff;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The murmur3 64-bit finalizer: every input bit affects every output bit.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The call's bucket for one policy, in `0..BUCKETS`.
pub fn bucket(contact_id: &str, policy: &str) -> u32 {
    let h = fmix64(fnv1a64(&[contact_id.as_bytes(), policy.as_bytes()]));
    // The remainder is below BUCKETS, so it fits in u32.
    (h % u64::from(BUCKETS)) as u32
}

/// Whether the call is in the policy's sample of `percentage` % (values above 100 act as 100).
pub fn selected(contact_id: &str, policy: &str, percentage: u32) -> bool {
    bucket(contact_id, policy) < percentage.min(100) * (BUCKETS / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vectors() {
        // Plain FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; with the separator byte it changes,
        // so check the core loop through an empty part list instead.
        assert_eq!(fnv1a64(&[]), FNV_OFFSET);
        let mut h = FNV_OFFSET;
        h ^= u64::from(b'a');
        h = h.wrapping_mul(FNV_PRIME);
        assert_eq!(h, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn stable_and_salted() {
        assert_eq!(bucket("call-42", "p"), bucket("call-42", "p"));
        assert_ne!(fnv1a64(&[b"ab", b"c"]), fnv1a64(&[b"a", b"bc"]));
        let differ = (0..100)
            .filter(|i| bucket(&format!("c{i}"), "p1") != bucket(&format!("c{i}"), "p2"))
            .count();
        assert!(differ > 90, "salting by policy name changes buckets");
    }

    #[test]
    fn bounds() {
        for i in 0..1000 {
            let id = format!("id-{i}");
            assert!(!selected(&id, "p", 0));
            assert!(selected(&id, "p", 100));
            assert!(selected(&id, "p", 250));
        }
    }
}
