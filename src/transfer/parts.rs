//! Splitting an object into the byte ranges that are fetched in parallel.

use std::ops::Range;

/// Ranges of at most `part_size` bytes covering `0..size`, in order. A 0-byte
/// object has no parts (nothing is fetched; the file is just created).
pub fn split(size: u64, part_size: u64) -> Vec<Range<u64>> {
    let part_size = part_size.max(1);
    (0..size.div_ceil(part_size)).map(|i| i * part_size..((i + 1) * part_size).min(size)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_object_exactly_once() {
        for (size, part) in [(0u64, 8u64), (1, 8), (8, 8), (9, 8), (100, 7), (1 << 30, 8 << 20)] {
            let parts = split(size, part);
            assert_eq!(parts.iter().map(|r| r.end - r.start).sum::<u64>(), size);
            let mut next = 0;
            for r in &parts {
                assert_eq!(r.start, next);
                assert!(r.end > r.start && r.end - r.start <= part);
                next = r.end;
            }
        }
        assert!(split(0, 8).is_empty());
        assert_eq!(split(9, 8), vec![0..8, 8..9]);
    }
}
