//! FNV-1a: the one small hash sftsan uses where a name or an identity must be the same in
//! every run and build (tags in interface names, initiator names, image identities). Not
//! for integrity: verified blocks use SHA-256.

const OFFSET_64: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME_64: u64 = 0x0000_0100_0000_01b3;
const OFFSET_32: u32 = 0x811c_9dc5;
const PRIME_32: u32 = 0x0100_0193;

/// A running 64-bit FNV-1a.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(OFFSET_64)
    }
}

impl Fnv64 {
    /// Feeds `bytes` into the hash.
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(PRIME_64);
        }
    }

    /// The hash of everything fed in so far.
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// 64-bit FNV-1a over `parts`, each followed by a NUL, so ("ab", "c") and ("a", "bc")
/// differ.
pub fn fnv64_parts(parts: &[&str]) -> u64 {
    let mut h = Fnv64::default();
    for part in parts {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    h.finish()
}

/// 32-bit FNV-1a of `bytes`.
pub fn fnv32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(OFFSET_32, |h, b| (h ^ u32::from(*b)).wrapping_mul(PRIME_32))
}

/// Five characters (digits and letters, 916 million values) of FNV-1a over a node's name:
/// what fits beside a cluster's tag in a 15-byte interface name. Validation refuses two
/// nodes of a cluster that would share one.
pub fn node_tag(node: &str) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut v = fnv32(node.as_bytes());
    (0..5)
        .map(|_| {
            let d = DIGITS[(v % 62) as usize] as char;
            v /= 62;
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a test vectors.
    #[test]
    fn matches_the_reference_values() {
        assert_eq!(fnv32(b""), 0x811c_9dc5);
        assert_eq!(fnv32(b"a"), 0xe40c_292c);
        assert_eq!(fnv32(b"foobar"), 0xbf9c_f968);
        let mut h = Fnv64::default();
        h.update(b"foobar");
        assert_eq!(h.finish(), 0x8594_4171_f739_67e8);
        assert_ne!(fnv64_parts(&["ab", "c"]), fnv64_parts(&["a", "bc"]));
    }
}
