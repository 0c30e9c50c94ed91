//! Which bytes of each segment are written: an object's fetch ranges grouped
//! by the segment (the whole object, or one uploaded part) whose hash must be
//! computed in order, and how far each segment's written prefix reaches.

use std::ops::Range;

/// One segment: the ranges it is made of and its in-order progress.
#[derive(Debug)]
pub(super) struct Segment {
    pub bytes: Range<u64>,
    /// Indices of the fetch ranges inside this segment.
    pub ranges: Range<usize>,
    /// First range of the segment not yet completely written.
    first: usize,
}

/// The segments of one object.
#[derive(Debug)]
pub(super) struct Segments {
    pub list: Vec<Segment>,
    /// Bytes written from the start of each range.
    written: Vec<u64>,
    /// Segment index of each range.
    of_range: Vec<usize>,
    ranges: Vec<Range<u64>>,
}

impl Segments {
    /// Groups `ranges` (in order, covering the object) into segments of
    /// `segment` bytes; every range must lie inside one segment.
    pub fn new(ranges: &[Range<u64>], segment: u64) -> Segments {
        let segment = segment.max(1);
        let mut list: Vec<Segment> = Vec::new();
        let mut of_range = Vec::with_capacity(ranges.len());
        for (i, r) in ranges.iter().enumerate() {
            let s = (r.start / segment) as usize;
            debug_assert!(r.is_empty() || (r.end - 1) / segment == s as u64, "range {r:?} crosses a segment");
            let same = list.len() == s + 1;
            match list.last_mut() {
                Some(last) if same => {
                    last.ranges.end = i + 1;
                    last.bytes.end = r.end;
                }
                _ => list.push(Segment { bytes: r.clone(), ranges: i..i + 1, first: i }),
            }
            of_range.push(list.len() - 1);
        }
        Segments { list, written: vec![0; ranges.len()], of_range, ranges: ranges.to_vec() }
    }

    pub fn segment_of(&self, range: usize) -> usize {
        self.of_range[range]
    }

    /// Whether every segment is a single range.
    pub fn one_range_each(&self) -> bool {
        self.list.len() == self.ranges.len()
    }

    /// Range `range` now has `n` bytes written from its start. Returns its
    /// segment and where the segment's written prefix now ends.
    pub fn wrote(&mut self, range: usize, n: u64) -> (usize, u64) {
        let r = &self.ranges[range];
        self.written[range] = self.written[range].max(n.min(r.end - r.start));
        let s = self.of_range[range];
        (s, self.advance(s))
    }

    /// Where segment `s`'s written prefix ends.
    pub fn prefix(&self, s: usize) -> u64 {
        let seg = &self.list[s];
        match self.ranges.get(seg.first) {
            Some(r) if seg.first < seg.ranges.end => r.start + self.written[seg.first],
            _ => seg.bytes.end,
        }
    }

    fn advance(&mut self, s: usize) -> u64 {
        let seg = &mut self.list[s];
        while seg.first < seg.ranges.end {
            let r = &self.ranges[seg.first];
            if self.written[seg.first] < r.end - r.start {
                break;
            }
            seg.first += 1;
        }
        self.prefix(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::parts;

    #[test]
    fn ranges_group_into_the_segments_that_hold_them() {
        // An upload of 10-byte parts fetched in ranges of at most 4.
        let ranges = parts::split_aligned(25, 10, 4);
        let s = Segments::new(&ranges, 10);
        let got: Vec<(Range<u64>, Range<usize>)> = s.list.iter().map(|g| (g.bytes.clone(), g.ranges.clone())).collect();
        assert_eq!(got, vec![(0..10, 0..3), (10..20, 3..6), (20..25, 6..8)]);
        assert_eq!(s.segment_of(4), 1);
        assert!(!s.one_range_each());
        // The whole object as one segment; one range per segment.
        assert_eq!(Segments::new(&parts::split(25, 4), 25).list.len(), 1);
        assert!(Segments::new(&parts::split(25, 10), 10).one_range_each());
        // An empty object: one empty range, one empty segment.
        let empty = Segments::new(std::slice::from_ref(&(0..0)), 0);
        assert_eq!(empty.list.len(), 1);
        assert_eq!(empty.prefix(0), 0);
    }

    #[test]
    fn the_prefix_grows_only_through_ranges_written_in_full() {
        let ranges = parts::split(12, 4); // 0..4, 4..8, 8..12
        let mut s = Segments::new(&ranges, 12);
        // The last range finishes first: nothing before it is written yet.
        assert_eq!(s.wrote(2, 4), (0, 0));
        assert_eq!(s.wrote(0, 3), (0, 3));
        assert_eq!(s.wrote(1, 4), (0, 3), "range 0 is not complete");
        // Never backwards (a retried body reports from where it resumed).
        assert_eq!(s.wrote(0, 1), (0, 3));
        assert_eq!(s.wrote(0, 4), (0, 12), "ranges 1 and 2 were already written");
        assert_eq!(s.wrote(1, 99), (0, 12), "clamped to the range");
    }
}
