//! The image the fault runs read: every 64 KiB block filled with one byte derived from its
//! index, so a reader checks every byte it reads with `qemu-io read -P BYTE` and needs no
//! copy of the image.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// The pattern block, also the cache's cluster: a miss fetches one block from upstream.
pub const BLOCK: u64 = 64 * 1024;

/// SplitMix64's output function: a well-mixed 64-bit value of `x`.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The byte block `index` is filled with: hashed (so a block served in another's place
/// almost always shows), never 0 (a zero block may be skipped or unmapped on the way).
pub fn pattern(index: u64) -> u8 {
    (mix(index) % 255 + 1) as u8
}

/// Writes `size` bytes (whole blocks) of the pattern to `path`, synced.
pub fn make(path: &Path, size: u64) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // 16 blocks per write: few syscalls, 1 MiB of memory.
    let per_write = 16;
    let mut buf = vec![0u8; (BLOCK * per_write) as usize];
    let blocks = size / BLOCK;
    let mut index = 0;
    while index < blocks {
        let n = per_write.min(blocks - index);
        for (i, chunk) in buf.chunks_mut(BLOCK as usize).take(n as usize).enumerate() {
            chunk.fill(pattern(index + i as u64));
        }
        file.write_all(&buf[..(n * BLOCK) as usize])
            .with_context(|| format!("writing {}", path.display()))?;
        index += n;
    }
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn patterns_are_never_zero_and_differ_between_neighbours() {
        assert!((0..100_000).all(|i| pattern(i) != 0));
        let same = (0..10_000)
            .filter(|&i| pattern(i) == pattern(i + 1))
            .count();
        assert!(same < 100, "{same} of 10000 neighbours share a byte");
        // Blocks 256 apart (an offset mistake of 16 MiB) differ as often as any others.
        let aliased = (0..10_000)
            .filter(|&i| pattern(i) == pattern(i + 256))
            .count();
        assert!(
            aliased < 100,
            "{aliased} of 10000 blocks share their byte 256 on"
        );
    }

    #[test]
    fn the_image_holds_each_blocks_byte() {
        let dir = std::env::temp_dir().join(format!("sftsan-faults-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("image.raw");
        make(&path, 20 * BLOCK).unwrap();
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes.len() as u64, 20 * BLOCK);
        for (i, block) in bytes.chunks(BLOCK as usize).enumerate() {
            assert!(block.iter().all(|&b| b == pattern(i as u64)), "block {i}");
        }
        assert!(
            make(&path, BLOCK).is_err(),
            "an existing image is never overwritten"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
