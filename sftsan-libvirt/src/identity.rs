//! Names, UUIDs and MAC addresses of sftsan's domains, derived from (cluster, node, snapshot
//! index) so that running the same batch again produces the same domains.

use sftsan_core::error::{Error, Result};
use sha2::{Digest, Sha256};

/// The default name pattern, in the spirit of the original sftsan's `test<node>x<n>`.
pub const DEFAULT_NAME_PATTERN: &str = "{cluster}-{node}-{index}";

/// A domain name pattern with `{cluster}`, `{image}`, `{node}` and `{index}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    /// Checks the pattern: it must name `{node}` and `{index}` (so that names are unique
    /// within a cluster), know every placeholder and make a valid libvirt name.
    pub fn new(pattern: &str) -> Result<NamePattern> {
        let bad = |problem: String| Error::invalid(format!("name pattern {pattern:?}"), problem);
        let mut rest = pattern;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| bad("has an unclosed '{'".into()))?;
            let key = &rest[open + 1..open + close];
            if !["cluster", "image", "node", "index"].contains(&key) {
                return Err(bad(format!(
                    "unknown placeholder {{{key}}} (use {{cluster}}, {{image}}, {{node}}, {{index}})"
                )));
            }
            rest = &rest[open + close + 1..];
        }
        for needed in ["{node}", "{index}"] {
            if !pattern.contains(needed) {
                return Err(bad(format!(
                    "must contain {needed}, or two VMs would get one name"
                )));
            }
        }
        if pattern.contains('/') || pattern.chars().any(char::is_whitespace) {
            return Err(bad("no '/' or whitespace in domain names".into()));
        }
        Ok(NamePattern(pattern.into()))
    }

    /// The domain name of one VM: the placeholders replaced by these values.
    pub fn expand(&self, cluster: &str, image: &str, node: &str, index: u32) -> String {
        self.0
            .replace("{cluster}", cluster)
            .replace("{image}", image)
            .replace("{node}", node)
            .replace("{index}", &index.to_string())
    }

    /// The pattern as written, placeholders unexpanded.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for NamePattern {
    fn default() -> Self {
        NamePattern(DEFAULT_NAME_PATTERN.into())
    }
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sftsan-vm");
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// A stable UUID for the VM (RFC 9562 version 8: a name-derived, vendor-specific UUID).
pub fn vm_uuid(cluster: &str, node: &str, index: u32) -> String {
    let d = digest(&["uuid", cluster, node, &index.to_string()]);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A stable, locally administered unicast MAC (`02:xx:xx:xx:xx:xx`) for network interface
/// `nic` (0-based) of the VM.
pub fn vm_mac(cluster: &str, node: &str, index: u32, nic: usize) -> String {
    let d = digest(&["mac", cluster, node, &index.to_string(), &nic.to_string()]);
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        d[0], d[1], d[2], d[3], d[4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_expand_and_are_checked() {
        let p = NamePattern::default();
        assert_eq!(p.expand("c1", "base", "n2", 3), "c1-n2-3");
        let p = NamePattern::new("test{node}x{index}").unwrap();
        assert_eq!(p.expand("c1", "base", "n2", 3), "testn2x3");
        assert!(NamePattern::new("{cluster}-{index}").is_err());
        assert!(NamePattern::new("{node}-{idx}").is_err());
        assert!(NamePattern::new("{node}-{index").is_err());
        assert!(NamePattern::new("a b{node}{index}").is_err());
    }

    #[test]
    fn uuids_and_macs_are_stable_and_distinct() {
        let u = vm_uuid("c", "n1", 1);
        assert_eq!(u, vm_uuid("c", "n1", 1));
        assert_ne!(u, vm_uuid("c", "n1", 2));
        assert_ne!(u, vm_uuid("c", "n2", 1));
        assert_ne!(u, vm_uuid("d", "n1", 1));
        // "n1" + "1" must not collide with "n" + "11".
        assert_ne!(vm_uuid("c", "n1", 1), vm_uuid("c", "n", 11));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "8", "version 8: {u}");
        assert!("89ab".contains(&u[19..20]), "RFC variant: {u}");

        let m = vm_mac("c", "n1", 1, 0);
        assert_eq!(m, vm_mac("c", "n1", 1, 0));
        assert_ne!(m, vm_mac("c", "n1", 1, 1));
        assert_ne!(m, vm_mac("c", "n1", 2, 0));
        assert!(m.starts_with("02:"), "{m}");
        assert_eq!(m.len(), 17);
    }
}
