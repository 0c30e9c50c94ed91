//! Splitting an object into the byte ranges that are fetched in parallel.

use std::ops::Range;

/// Ranges of at most `part_size` bytes covering `0..size`, in order. A 0-byte
/// object has no parts (nothing is fetched; the file is just created).
pub fn split(size: u64, part_size: u64) -> Vec<Range<u64>> {
    let part_size = part_size.max(1);
    (0..size.div_ceil(part_size)).map(|i| i * part_size..((i + 1) * part_size).min(size)).collect()
}

/// Ranges aligned to the parts of an upload split every `upload_part` bytes:
/// each upload part is covered by ranges of at most `part_size` bytes, and no
/// range crosses from one upload part into the next.
pub fn split_aligned(size: u64, upload_part: u64, part_size: u64) -> Vec<Range<u64>> {
    split(size, upload_part)
        .into_iter()
        .flat_map(|up| {
            split(up.end - up.start, part_size).into_iter().map(move |r| up.start + r.start..up.start + r.end)
        })
        .collect()
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
        assert_eq!(split_aligned(25, 10, 4), vec![0..4, 4..8, 8..10, 10..14, 14..18, 18..20, 20..24, 24..25]);
        assert_eq!(split_aligned(25, 10, 100), vec![0..10, 10..20, 20..25]);
        assert_eq!(split(9, 8), vec![0..8, 8..9]);
    }
}
