//! How far each segment of an object is written: the segment (the whole
//! object, or one uploaded part) whose hash is computed in order can be
//! hashed up to the end of its written prefix.
//!
//! Memory does not grow with the number of ranges beyond a bit each: a
//! segment keeps the first range not completely written and how far it is;
//! a range further on is a bit when complete, or an entry while it is being
//! written (as many as are in flight).

use std::collections::HashMap;
use std::ops::Range;

use super::parts::Ranges;

/// A bit per range.
#[derive(Debug)]
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
}

/// One segment's in-order progress.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// First range of the segment not yet completely written.
    first: usize,
    /// Bytes written from the start of that range.
    first_written: u64,
}

/// The segments of one object.
#[derive(Debug)]
pub(super) struct Segments {
    ranges: Ranges,
    list: Vec<Progress>,
    /// Ranges completely written, a bit each (beyond their segment's first).
    done: Bits,
    /// Bytes written of ranges beyond their segment's first, not complete.
    partial: HashMap<usize, u64>,
}

impl Segments {
    pub fn new(ranges: Ranges) -> Segments {
        let list = (0..ranges.segment_count())
            .map(|s| Progress { first: ranges.segment_ranges(s).start, first_written: 0 })
            .collect();
        Segments { ranges, list, done: Bits::new(ranges.len()), partial: HashMap::new() }
    }

    pub fn count(&self) -> usize {
        self.list.len()
    }

    pub fn segment_of(&self, range: usize) -> usize {
        self.ranges.segment_of(range)
    }

    /// The ranges of segment `s`.
    pub fn ranges(&self, s: usize) -> Range<usize> {
        self.ranges.segment_ranges(s)
    }

    /// The bytes of segment `s`.
    pub fn bytes(&self, s: usize) -> Range<u64> {
        self.ranges.segment_bytes(s)
    }

    /// Whether every segment is a single range.
    pub fn one_range_each(&self) -> bool {
        self.list.len() == self.ranges.len()
    }

    /// Range `range` now has `n` bytes written from its start. Returns its
    /// segment and where the segment's written prefix now ends.
    pub fn wrote(&mut self, range: usize, n: u64) -> (usize, u64) {
        let r = self.ranges.get(range);
        let n = n.min(r.end - r.start);
        let s = self.segment_of(range);
        let seg = &mut self.list[s];
        if range == seg.first {
            seg.first_written = seg.first_written.max(n);
        } else if range > seg.first && !self.done.get(range) {
            if n == r.end - r.start {
                self.partial.remove(&range);
                self.done.set(range);
            } else {
                let w = self.partial.entry(range).or_default();
                *w = (*w).max(n);
            }
        }
        (s, self.advance(s))
    }

    /// Where segment `s`'s written prefix ends.
    pub fn prefix(&self, s: usize) -> u64 {
        let seg = self.list[s];
        match seg.first < self.ranges(s).end {
            true => self.ranges.get(seg.first).start + seg.first_written,
            false => self.bytes(s).end,
        }
    }

    fn advance(&mut self, s: usize) -> u64 {
        let end = self.ranges(s).end;
        loop {
            let seg = self.list[s];
            if seg.first >= end {
                break;
            }
            let r = self.ranges.get(seg.first);
            if seg.first_written < r.end - r.start {
                break;
            }
            let next = seg.first + 1;
            let first_written = match next < end && self.done.get(next) {
                true => {
                    let r = self.ranges.get(next);
                    r.end - r.start
                }
                false => self.partial.remove(&next).unwrap_or(0),
            };
            self.list[s] = Progress { first: next, first_written };
        }
        self.prefix(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_group_into_the_segments_that_hold_them() {
        // An upload of 10-byte parts fetched in ranges of at most 4.
        let s = Segments::new(Ranges::aligned(25, 10, 4));
        assert_eq!(s.count(), 3);
        assert_eq!((0..3).map(|i| s.ranges(i)).collect::<Vec<_>>(), vec![0..3, 3..6, 6..8]);
        assert_eq!((0..3).map(|i| s.bytes(i)).collect::<Vec<_>>(), vec![0..10, 10..20, 20..25]);
        assert_eq!(s.segment_of(4), 1);
        assert!(!s.one_range_each());
        assert_eq!(Segments::new(Ranges::split(25, 4)).count(), 1);
        assert!(Segments::new(Ranges::aligned(25, 10, 10)).one_range_each());
    }

    #[test]
    fn the_written_prefix_advances_only_over_complete_ranges() {
        let mut s = Segments::new(Ranges::split(12, 4)); // 0..4, 4..8, 8..12
        assert_eq!(s.prefix(0), 0);
        assert_eq!(s.wrote(2, 4), (0, 0), "a later range alone does not move the prefix");
        assert_eq!(s.wrote(0, 3), (0, 3));
        assert_eq!(s.wrote(1, 4), (0, 3), "range 0 is not complete");
        // Never backwards (a retried body reports from where it resumed).
        assert_eq!(s.wrote(0, 1), (0, 3));
        assert_eq!(s.wrote(0, 4), (0, 12), "ranges 1 and 2 were already written");
        assert_eq!(s.wrote(1, 99), (0, 12), "clamped to the range");
    }

    #[test]
    fn a_partly_written_range_beyond_the_first_is_picked_up_when_the_prefix_reaches_it() {
        let mut s = Segments::new(Ranges::split(12, 4));
        assert_eq!(s.wrote(1, 2), (0, 0));
        assert_eq!(s.wrote(1, 1), (0, 0), "never backwards");
        assert_eq!(s.wrote(0, 4), (0, 6), "range 0, then half of range 1");
        assert_eq!(s.wrote(1, 4), (0, 8));
        assert!(s.partial.is_empty(), "nothing is kept of a range once the prefix passes it");
    }

    #[test]
    fn five_million_ranges_cost_a_bit_each() {
        let mut s = Segments::new(Ranges::split(5 << 40, 1 << 20));
        assert_eq!(s.done.0.len() * 64, 5 << 20);
        assert_eq!(s.wrote(0, 1 << 20), (0, 1 << 20));
    }
}
