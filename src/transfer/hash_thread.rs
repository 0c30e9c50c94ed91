//! The hashing thread: what it takes next (small objects whose wait is
//! over, or a step of each segment due), and how it hashes a batch (MD5s of
//! several segments in one SIMD call, the others one by one).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::hash_state::*;
use crate::integrity::{PartDigest, PartSum};
use crate::localfs::IoBuf;

/// One step taken by a thread: `len` bytes of a segment from `at`.
pub(super) struct Step {
    id: StreamId,
    file: Arc<ReadBack>,
    /// The bytes, when they were handed over: nothing to read back.
    given: Option<IoBuf>,
    at: u64,
    len: usize,
    digest: PartDigest,
}

/// What the hashing thread does next.
enum Work {
    /// Small objects whose wait is over (or a full batch of them).
    Wholes(Vec<Whole>),
    /// A step of each segment taken.
    Steps(Vec<Step>),
    Stop,
}

pub(super) fn hash_loop(shared: &Shared) {
    let md5 = md5_many::Md5Many::new();
    // The calls' shape: the engine's, set when the hasher was made.
    let width = shared.state.lock().unwrap().width;
    let mut bufs: Vec<IoBuf> = Vec::new();
    loop {
        match next_work(shared) {
            Work::Wholes(wholes) => hash_wholes(shared, md5, width, wholes),
            Work::Steps(steps) => run_steps(shared, md5, width, &mut bufs, steps),
            Work::Stop => return,
        }
    }
}

/// Waits for work: small objects first (their commits wait on them; once
/// the hasher is closed they are due at once, so none is left unanswered),
/// then segments; stops when the hasher is closed and no small object waits.
fn next_work(shared: &Shared) -> Work {
    let mut st = shared.state.lock().unwrap();
    loop {
        let now = std::time::Instant::now();
        let wholes_at = st.wholes_due();
        if wholes_at.is_some_and(|at| at <= now) {
            return Work::Wholes(std::mem::take(&mut st.wholes));
        }
        if st.closed {
            return Work::Stop;
        }
        if st.worth_a_step() {
            return Work::Steps(take_steps(&mut st));
        }
        st = match st.next_deadline() {
            Some(at) => shared.work.wait_timeout(st, at.saturating_duration_since(now)).unwrap().0,
            None => shared.work.wait(st).unwrap(),
        };
    }
}

/// MD5s whole small objects together, in multi-buffer calls shaped by
/// [`Width`] (padded with copies of the first input, whose results are
/// dropped, as `hash_steps` does; lengths may differ: md5-many hashes their
/// common blocks together and the rest apart), then sends each digest and
/// frees the buffers.
fn hash_wholes(shared: &Shared, md5: md5_many::Md5Many, shape: Width, wholes: Vec<Whole>) {
    let mut digests = Vec::with_capacity(wholes.len());
    let mut calls = 0;
    for batch in wholes.chunks(shape.most) {
        let mut inputs: Vec<&[u8]> = batch.iter().map(|w| w.buf.as_ref()).collect();
        let width = shape.padded(inputs.len());
        inputs.resize(width, inputs[0]);
        let mut out = vec![[0u8; 16]; width];
        if width == 1 {
            out[0] = md5_many::md5(inputs[0]);
        } else {
            md5.hash_many(&inputs, &mut out);
        }
        digests.extend(out.into_iter().take(batch.len()));
        calls += 1;
    }
    let mut sends = Vec::with_capacity(wholes.len());
    {
        let mut st = shared.state.lock().unwrap();
        st.wholes_hashed += wholes.len() as u64;
        st.whole_calls += calls;
        st.given -= wholes.len();
        for (w, d) in wholes.into_iter().zip(digests) {
            st.free.push(w.buf);
            sends.push((w.tx, d));
        }
    }
    shared.room.notify_waiters();
    for (tx, d) in sends {
        let _ = tx.send(Ok(PartSum::Hash(crate::integrity::DigestValue::new(&d).expect("16 bytes"))));
    }
}

/// Reads and hashes one step of each segment taken, outside the lock, then
/// puts the digests back and reports the segments that are finished.
pub(super) fn run_steps(
    shared: &Shared,
    md5: md5_many::Md5Many,
    width: Width,
    bufs: &mut Vec<IoBuf>,
    mut steps: Vec<Step>,
) {
    // A step whose bytes cannot be read back fails its segment; the others
    // are hashed, each with its own buffer.
    let given: Vec<Option<IoBuf>> = steps.iter_mut().map(|s| s.given.take()).collect();
    // Buffers to read into, for the steps whose bytes were not handed over.
    bufs.resize_with(steps.len(), IoBuf::default);
    let mut failed: Vec<(StreamId, String)> = Vec::new();
    let mut read = Vec::with_capacity(steps.len());
    for ((step, buf), given) in steps.drain(..).zip(bufs.iter_mut()).zip(&given) {
        if let Some(g) = given {
            read.push((step, g.as_ref()));
            continue;
        }
        if buf.capacity() < CHUNK {
            *buf = IoBuf::new(CHUNK);
        }
        match step.file.read(buf, step.at, step.len) {
            Ok(()) => {
                let buf: &IoBuf = buf;
                read.push((step, buf.as_ref()));
            }
            Err(e) => failed.push((step.id, format!("reading back bytes {}.. to hash them: {e}", step.at))),
        }
    }
    let calls = hash_steps(md5, width, &mut read);
    let steps: Vec<Step> = read.into_iter().map(|(step, _)| step).collect();
    // Steps hashed from a buffer never fail: the others were read back.
    let from_buffers: u64 = given.iter().flatten().map(|b| b.len() as u64).sum();
    let read_back = steps.iter().map(|s| s.len as u64).sum::<u64>() - from_buffers;
    // Finished segments give their file handle back before they report.
    let mut done: Vec<(oneshot::Sender<SegmentResult>, SegmentResult)> = Vec::new();
    {
        let mut st = shared.state.lock().unwrap();
        for (id, why) in failed {
            if let Some(mut s) = st.streams.remove(&id) {
                st.given -= s.given.len();
                if let Some(tx) = s.tx.take() {
                    done.push((tx, Err(why)));
                }
            }
        }
        for step in steps {
            let Some(s) = st.streams.get_mut(&step.id) else { continue };
            s.hashed = step.at + step.len as u64;
            if s.hashed == s.end {
                let mut s = st.streams.remove(&step.id).expect("present");
                st.given -= s.given.len();
                if let Some(tx) = s.tx.take() {
                    done.push((tx, Ok(step.digest.finish())));
                }
            } else {
                s.digest = Some(step.digest);
            }
        }
        st.from_buffers += from_buffers;
        st.md5_calls.add(calls);
        st.read_back += read_back;
        let freed = given.iter().flatten().count();
        st.given -= freed;
        st.free.extend(given.into_iter().flatten());
        if st.worth_a_step() {
            shared.work.notify_one();
        }
        drop(st);
        if freed > 0 {
            shared.room.notify_waiters();
        }
    }
    for (tx, r) in done {
        let _ = tx.send(r);
    }
}

/// Takes due segments out of the state, as many as one call's [`Width`]
/// takes at most, MD5s first (they gain from being hashed together).
pub(super) fn take_steps(st: &mut State) -> Vec<Step> {
    let mut due: Vec<(bool, bool, StreamId)> = st
        .streams
        .iter()
        .filter(|(_, s)| s.due())
        .map(|(id, s)| (!s.urgent(), !matches!(s.digest, Some(PartDigest::Md5(_))), *id))
        .collect();
    due.sort_unstable_by_key(|(not_urgent, not_md5, id)| (*not_urgent, *not_md5, id.0));
    due.truncate(whole_batches(&due, st.width));
    let mut passed = Vec::new();
    let steps = due
        .into_iter()
        .map(|(_, _, id)| {
            let s = st.streams.get_mut(&id).expect("present");
            let given = s.next_given(&mut passed);
            // Read back no further than the next given buffer.
            let upto = match s.given.front() {
                Some((at, _)) if *at > s.hashed => s.ready.min(*at),
                _ => s.ready,
            };
            let len = match &given {
                Some(b) => b.len(),
                None => (upto - s.hashed).min(CHUNK as u64) as usize,
            };
            Step { id, file: s.file.clone(), given, at: s.hashed, len, digest: s.digest.take().expect("due") }
        })
        .collect();
    st.given -= passed.len();
    st.free.extend(passed);
    steps
}

/// How many of the due segments (urgent first) to take: at most
/// `width.most`, and beyond one unit only whole units, so that no call is
/// padded with lanes that hash nothing (measured: 6.5 lanes a call on average
/// when every due segment was taken, half as many bytes again hashed for
/// padding). The rest wait for company, or until they are urgent.
pub(super) fn whole_batches(due: &[(bool, bool, StreamId)], width: Width) -> usize {
    let n = due.len().min(width.most);
    let urgent = due.iter().take_while(|(not_urgent, _, _)| !not_urgent).count().min(width.most);
    if n <= width.unit { n } else { (n - n % width.unit).max(urgent) }
}

/// Feeds each step's bytes to its digest. MD5 steps of equal length are
/// hashed together, in multi-buffer calls shaped by [`Width`]: md5-many runs
/// 5 lanes at 0.14 GiB/s and 12 at 1.8 (AVX2), far below the native widths,
/// so a batch is filled with copies of its first input whose results are
/// dropped. A lone step, or one of a length no other has (a segment's tail),
/// is hashed on its own. Returns the multi-buffer calls made.
pub(super) fn hash_steps(md5: md5_many::Md5Many, shape: Width, steps: &mut [(Step, &[u8])]) -> Calls {
    let mut calls = Calls::default();
    let mut by_len: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (step, buf)) in steps.iter_mut().enumerate() {
        match &mut step.digest {
            PartDigest::Md5(_) => by_len.entry(step.len).or_default().push(i),
            other => other.update(&buf[..step.len]),
        }
    }
    for (len, group) in by_len {
        let md5_of = |step: &Step| match step.digest {
            PartDigest::Md5(s) => s,
            _ => unreachable!("grouped as MD5"),
        };
        if group.len() == 1 {
            let (step, buf) = &mut steps[group[0]];
            step.digest.update(&buf[..len]);
            continue;
        }
        for lanes in group.chunks(shape.most) {
            let width = shape.padded(lanes.len());
            let mut states: Vec<md5_many::Md5State> = lanes.iter().map(|&i| md5_of(&steps[i].0)).collect();
            let mut inputs: Vec<&[u8]> = lanes.iter().map(|&i| &steps[i].1[..len]).collect();
            states.resize(width, md5_many::Md5State::new());
            inputs.resize(width, inputs[0]);
            md5.update_many(&mut states, &inputs);
            calls.add(Calls { calls: 1, inputs: lanes.len() as u64, lanes: width as u64 });
            for (&i, state) in lanes.iter().zip(states) {
                steps[i].0.digest = PartDigest::Md5(state);
            }
        }
    }
    calls
}
