//! Which part a free worker takes next: a pure state machine over the parts of
//! every object in a pass, with per-object and global limits.
//!
//! - a worker first takes the next part of an object already open, as long as
//!   that object has fewer than `part_concurrency` parts in flight;
//! - otherwise it opens the next object (at most `max_open` with parts not
//!   yet handed out);
//! - otherwise, when the cap per object is soft (the requests in flight are
//!   sized to the link and `--concurrency` was not given), it takes the next
//!   part of the open object with the fewest parts in flight: the cap spreads
//!   the parts over several files (one file written by many threads at once
//!   contends on its lock: 10% more time for 4 x 1 GiB at 32 parts a file),
//!   without holding a single large object to it;
//! - otherwise it waits for a part to finish, or is done.
//!
//! A failed part fails its object: the object's parts not yet handed out are
//! never handed out, and the object finishes (with the first error) when its
//! parts in flight have come back.

/// Scheduling state of one object.
#[derive(Debug)]
struct Slot {
    parts: usize,
    next_part: usize,
    in_flight: usize,
    unfinished: usize,
}

/// What a worker should do next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pick {
    /// Fetch part `.1` of object `.0`.
    Part(usize, usize),
    /// Nothing to take now: wait for a part to finish.
    Wait,
    /// Every part is handed out and no object is open.
    Done,
}

/// An object whose last part came back.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Finished<E> {
    /// Parts are still out.
    No,
    /// Every part succeeded, or the first error.
    Yes(Result<(), E>),
}

#[derive(Debug)]
pub(super) struct Scheduler<E> {
    slots: Vec<Slot>,
    /// First error per object.
    errors: Vec<Option<E>>,
    /// Objects with parts not yet handed out.
    active: Vec<usize>,
    next_object: usize,
    part_concurrency: usize,
    max_open: usize,
    /// `part_concurrency` gives way when no other object can take a worker.
    soft: bool,
}

impl<E> Scheduler<E> {
    /// `parts[i]`: how many parts object `i` has (at least one each).
    pub fn new(parts: impl IntoIterator<Item = usize>, part_concurrency: usize, max_open: usize) -> Self {
        let slots: Vec<Slot> = parts
            .into_iter()
            .map(|n| Slot { parts: n.max(1), next_part: 0, in_flight: 0, unfinished: n.max(1) })
            .collect();
        Scheduler {
            errors: slots.iter().map(|_| None).collect(),
            slots,
            active: Vec::new(),
            next_object: 0,
            part_concurrency: part_concurrency.max(1),
            max_open: max_open.max(1),
            soft: false,
        }
    }

    /// Makes the cap per object soft (see the module's documentation).
    pub fn soft_cap(mut self, soft: bool) -> Self {
        self.soft = soft;
        self
    }

    pub fn pick(&mut self) -> Pick {
        for (i, &idx) in self.active.iter().enumerate() {
            let slot = &mut self.slots[idx];
            if slot.in_flight < self.part_concurrency {
                let p = take(slot);
                if slot.next_part == slot.parts {
                    self.active.swap_remove(i);
                }
                return Pick::Part(idx, p);
            }
        }
        if self.next_object < self.slots.len() && self.active.len() < self.max_open {
            let idx = self.next_object;
            self.next_object += 1;
            let slot = &mut self.slots[idx];
            let p = take(slot);
            if slot.parts > 1 {
                self.active.push(idx);
            }
            return Pick::Part(idx, p);
        }
        if self.soft
            && let Some((i, &idx)) = self.active.iter().enumerate().min_by_key(|&(_, &idx)| self.slots[idx].in_flight)
        {
            let slot = &mut self.slots[idx];
            let p = take(slot);
            if slot.next_part == slot.parts {
                self.active.swap_remove(i);
            }
            return Pick::Part(idx, p);
        }
        if self.active.is_empty() && self.next_object >= self.slots.len() { Pick::Done } else { Pick::Wait }
    }

    /// Records that a part of object `idx` is fetched (or failed): it no
    /// longer counts against its object's parts in flight, though it may still
    /// wait for its hash before [`Scheduler::part_done`].
    pub fn part_fetched(&mut self, idx: usize) {
        self.slots[idx].in_flight -= 1;
    }

    /// Records that a part of object `idx`, fetched, came back with `result`.
    pub fn part_done(&mut self, idx: usize, result: Result<(), E>) -> Finished<E> {
        let slot = &mut self.slots[idx];
        slot.unfinished -= 1;
        if let Err(e) = result {
            // Parts not yet handed out will not be: the object has failed.
            let skipped = slot.parts - slot.next_part;
            slot.unfinished -= skipped;
            slot.next_part = slot.parts;
            self.errors[idx].get_or_insert(e);
            if skipped > 0 {
                self.active.retain(|&a| a != idx);
            }
        }
        if self.slots[idx].unfinished > 0 {
            return Finished::No;
        }
        Finished::Yes(self.errors[idx].take().map_or(Ok(()), Err))
    }
}

fn take(slot: &mut Slot) -> usize {
    let p = slot.next_part;
    slot.next_part += 1;
    slot.in_flight += 1;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part of object `idx` fetched and done with `r`.
    fn back<E>(s: &mut Scheduler<E>, idx: usize, r: Result<(), E>) -> Finished<E> {
        s.part_fetched(idx);
        s.part_done(idx, r)
    }

    fn drain(s: &mut Scheduler<&'static str>) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        while let Pick::Part(o, p) = s.pick() {
            out.push((o, p));
        }
        out
    }

    #[test]
    fn open_objects_get_their_parts_first_up_to_part_concurrency() {
        let mut s = Scheduler::new([3, 1, 1], 2, 8);
        // Object 0 opens, takes a second part, then is at its limit: object 1
        // and 2 open; then nothing is left to take without a part coming back.
        assert_eq!(drain(&mut s), vec![(0, 0), (0, 1), (1, 0), (2, 0)]);
        assert_eq!(s.pick(), Pick::Wait);
        assert_eq!(back(&mut s, 0, Ok(())), Finished::No);
        assert_eq!(s.pick(), Pick::Part(0, 2));
        assert_eq!(s.pick(), Pick::Done, "every part is out");
    }

    #[test]
    fn a_soft_cap_spreads_parts_over_objects_first_then_gives_way() {
        let mut s = Scheduler::new([4, 5, 1], 2, 8).soft_cap(true);
        // Up to the cap on each object while another can be opened, then the
        // open object with the fewest parts in flight, then the next fewest.
        assert_eq!(drain(&mut s), vec![(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (0, 2), (1, 2), (0, 3), (1, 3), (1, 4)]);
        assert_eq!(s.pick(), Pick::Done, "every part is out");
        // A single object takes every worker.
        let mut one = Scheduler::<&str>::new([6], 2, 8).soft_cap(true);
        assert_eq!(drain(&mut one).len(), 6);
    }

    #[test]
    fn a_part_fetched_frees_its_objects_slot_before_it_is_done() {
        let mut s = Scheduler::<&str>::new([3], 1, 8);
        assert_eq!(s.pick(), Pick::Part(0, 0));
        assert_eq!(s.pick(), Pick::Wait, "at the cap of one part in flight");
        // Fetched, waiting for its hash: the next part may go.
        s.part_fetched(0);
        assert_eq!(s.pick(), Pick::Part(0, 1));
        assert_eq!(back(&mut s, 0, Ok(())), Finished::No);
        assert_eq!(s.pick(), Pick::Part(0, 2));
        assert_eq!(s.part_done(0, Ok(())), Finished::No, "the third part is out");
        assert_eq!(back(&mut s, 0, Ok(())), Finished::Yes(Ok(())));
    }

    #[test]
    fn no_more_than_max_open_objects_at_once() {
        let mut s = Scheduler::new([2, 2, 2], 1, 2);
        assert_eq!(drain(&mut s), vec![(0, 0), (1, 0)]);
        assert_eq!(s.pick(), Pick::Wait, "a third object would exceed max_open");
        assert_eq!(back(&mut s, 1, Ok(())), Finished::No);
        assert_eq!(s.pick(), Pick::Part(1, 1));
        // Object 1 has handed out its last part: it no longer counts as open.
        assert_eq!(s.pick(), Pick::Part(2, 0));
        assert_eq!(s.pick(), Pick::Wait);
    }

    #[test]
    fn single_part_objects_never_hold_an_open_slot() {
        let mut s = Scheduler::new([1; 5], 4, 1);
        assert_eq!(drain(&mut s).len(), 5);
        assert_eq!(s.pick(), Pick::Done);
    }

    #[test]
    fn a_failed_part_fails_its_object_once_its_parts_in_flight_are_back() {
        let mut s = Scheduler::new([4, 1], 2, 8);
        assert_eq!(drain(&mut s), vec![(0, 0), (0, 1), (1, 0)]);
        assert_eq!(back(&mut s, 0, Err("reset")), Finished::No, "part 1 is still out");
        assert_eq!(s.pick(), Pick::Done, "parts 2 and 3 are never handed out; the worker with part 1 finishes it");
        assert_eq!(back(&mut s, 0, Err("second")), Finished::Yes(Err("reset")), "the first error is kept");
        assert_eq!(back(&mut s, 1, Ok(())), Finished::Yes(Ok(())));
        assert_eq!(s.pick(), Pick::Done);
    }

    #[test]
    fn an_empty_pass_is_done_at_once() {
        let mut s: Scheduler<()> = Scheduler::new([], 16, 64);
        assert_eq!(s.pick(), Pick::Done);
    }
}
