//! Splitting an object into the byte ranges that are fetched in parallel,
//! and combining the ranges' CRCs per segment as they come ([`CrcFold`]).
//!
//! The ranges are computed, not stored: the largest object S3 allows (5 TiB)
//! in 1 MiB ranges is five million of them, and a plan that listed them up
//! front would cost hundreds of MiB before the first byte.

use std::collections::HashMap;
use std::ops::Range;

use crate::integrity::{self, Algorithm, PartCrc};

/// An object's fetch ranges: `0..size` cut into segments of `segment` bytes
/// (each uploaded part, or the whole object), and each segment into ranges
/// of at most `range` bytes, in order; no range crosses a segment. A 0-byte
/// object has one empty range (the file is created, nothing is fetched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranges {
    size: u64,
    segment: u64,
    range: u64,
    /// Ranges in each whole segment.
    per_segment: u64,
}

impl Ranges {
    /// The object in one segment, in ranges of at most `range` bytes.
    pub fn split(size: u64, range: u64) -> Ranges {
        Ranges::aligned(size, size, range)
    }

    /// Segments of `segment` bytes (an upload's parts), each in ranges of at
    /// most `range` bytes.
    pub fn aligned(size: u64, segment: u64, range: u64) -> Ranges {
        let segment = segment.max(1);
        let range = range.clamp(1, segment);
        Ranges { size, segment, range, per_segment: segment.div_ceil(range) }
    }

    /// How many ranges (at least one: there is no `is_empty`).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        let whole = self.size / self.segment;
        let tail = (self.size % self.segment).div_ceil(self.range);
        ((whole * self.per_segment + tail) as usize).max(1)
    }

    /// Range `p`; `p` must be below [`Ranges::len`].
    pub fn get(&self, p: usize) -> Range<u64> {
        let p = p as u64;
        let (s, i) = (p / self.per_segment, p % self.per_segment);
        let seg_start = s * self.segment;
        let start = (seg_start + i * self.range).min(self.size);
        let end = (start + self.range).min(seg_start + self.segment).min(self.size);
        start..end
    }

    pub fn first(&self) -> Range<u64> {
        self.get(0)
    }

    pub fn last(&self) -> Range<u64> {
        self.get(self.len() - 1)
    }

    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        (0..self.len()).map(|p| self.get(p))
    }

    /// The size of each segment (the last may be shorter).
    pub fn segment_size(&self) -> u64 {
        self.segment
    }

    /// How many segments (at least one).
    pub fn segment_count(&self) -> usize {
        (self.size.div_ceil(self.segment) as usize).max(1)
    }

    /// The segment range `p` lies in.
    pub fn segment_of(&self, p: usize) -> usize {
        (p as u64 / self.per_segment) as usize
    }

    /// The ranges of segment `s`.
    pub fn segment_ranges(&self, s: usize) -> Range<usize> {
        let first = s as u64 * self.per_segment;
        first as usize..((first + self.per_segment) as usize).min(self.len())
    }

    /// The bytes of segment `s`.
    pub fn segment_bytes(&self, s: usize) -> Range<u64> {
        let start = (s as u64 * self.segment).min(self.size);
        start..(start + self.segment).min(self.size)
    }
}

/// The CRCs of finished ranges, combined in order within each segment as
/// they come: a check needs each segment's CRC (the object's, or each
/// uploaded part's), not each range's, and five million ranges must not
/// mean five million CRCs kept.
#[derive(Debug, Default)]
pub(super) struct CrcFold {
    /// Per segment (made at the first CRC): the first range not yet
    /// combined, and the CRC of the ranges before it.
    folded: Vec<(usize, Option<PartCrc>)>,
    /// CRCs of ranges that finished before a range ahead of them.
    pub(super) early: HashMap<usize, PartCrc>,
}

impl CrcFold {
    pub(super) fn add(&mut self, ranges: &Ranges, algorithm: Algorithm, p: usize, crc: PartCrc) {
        if self.folded.is_empty() {
            self.folded = (0..ranges.segment_count()).map(|s| (ranges.segment_ranges(s).start, None)).collect();
        }
        let s = ranges.segment_of(p);
        let end = ranges.segment_ranges(s).end;
        let (next, acc) = &mut self.folded[s];
        if p < *next {
            return;
        }
        self.early.insert(p, crc);
        while *next < end {
            let Some(c) = self.early.remove(next) else { break };
            *acc = Some(match *acc {
                None => c,
                Some(a) => PartCrc { crc: integrity::combine(algorithm, &[a, c]), len: a.len + c.len },
            });
            *next += 1;
        }
    }

    /// Each segment's CRC, once every range of every segment is in.
    pub(super) fn per_segment(&self, ranges: &Ranges) -> Option<Vec<PartCrc>> {
        let complete = |s: usize, next: usize| next == ranges.segment_ranges(s).end;
        self.folded.iter().enumerate().map(|(s, &(next, acc))| acc.filter(|_| complete(s, next))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranges listed one by one, as a plan that stored them would.
    fn listed(size: u64, segment: u64, range: u64) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut seg = 0;
        while seg < size {
            let seg_end = (seg + segment).min(size);
            let mut at = seg;
            while at < seg_end {
                out.push(at..(at + range).min(seg_end));
                at += range;
            }
            seg = seg_end;
        }
        if out.is_empty() {
            out.push(0..0);
        }
        out
    }

    #[test]
    fn computed_ranges_are_the_listed_ones_and_cover_the_object_once() {
        for size in [0u64, 1, 7, 8, 9, 24, 25, 100, 1000] {
            for segment in [1u64, 3, 8, 10, 1000] {
                for range in [1u64, 2, 4, 8, 100] {
                    let r = Ranges::aligned(size, segment, range);
                    let want = listed(size, segment, range.min(segment));
                    assert_eq!(r.iter().collect::<Vec<_>>(), want, "size {size}, segment {segment}, range {range}");
                    assert_eq!(r.len(), want.len());
                    let mut seen = 0;
                    for s in 0..r.segment_count() {
                        let ranges = r.segment_ranges(s);
                        assert_eq!(ranges.start, seen, "segments follow each other");
                        seen = ranges.end;
                        let bytes = r.segment_bytes(s);
                        assert_eq!(r.get(ranges.start).start, bytes.start);
                        assert_eq!(r.get(ranges.end - 1).end, bytes.end);
                        assert!(ranges.clone().all(|p| r.segment_of(p) == s));
                    }
                    assert_eq!(seen, r.len(), "every range is in a segment");
                }
            }
        }
        assert_eq!(Ranges::split(9, 8).iter().collect::<Vec<_>>(), vec![0..8, 8..9]);
        let aligned = Ranges::aligned(25, 10, 4).iter().collect::<Vec<_>>();
        assert_eq!(aligned, vec![0..4, 4..8, 8..10, 10..14, 14..18, 18..20, 20..24, 24..25]);
    }

    #[test]
    fn the_largest_object_in_the_smallest_ranges_costs_nothing_to_plan() {
        let r = Ranges::split(5 << 40, 1 << 20);
        assert_eq!(r.len(), 5 << 20);
        assert_eq!(r.last(), (5 << 40) - (1 << 20)..5 << 40);
        assert_eq!(std::mem::size_of::<Ranges>(), 32);
    }
}
