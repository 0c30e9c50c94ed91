//! Fault injection, driven per test.
//!
//! A test adds [`Rule`]s to the server's [`Faults`]: which requests a rule applies
//! to (operation, optionally key, and which of the matching requests: the Nth,
//! the first K, every one) and what goes wrong ([`Fault`]). Each request takes the
//! first rule that fires for it. Rules count the requests they matched, so a test
//! can also read how often the client came back.
//!
//! Failures before the body (an error status, a swapped object, a wrong header)
//! are applied by the operation in `service.rs`; failures inside the body (a cut,
//! a stall, a flipped byte) by the body stream in `shaping.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

/// What goes wrong with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this HTTP status and S3 error code (e.g. 503 `SlowDown`,
    /// 500 `InternalError`, 403 `AccessDenied`, 404 `NoSuchKey`).
    Status { status: u16, code: &'static str },
    /// CompleteMultipartUpload: do the operation, then answer with this error
    /// anyway (a success whose answer was lost on the way back).
    ApplyThenStatus { status: u16, code: &'static str },
    /// Send this many body bytes, then fail the body: the connection is reset.
    CutAfter(u64),
    /// Send this many body bytes, then end the body early (fewer bytes than the
    /// Content-Length promised).
    EndAfter(u64),
    /// Send this many body bytes, then send nothing more, ever.
    StallAfter(u64),
    /// [`CutAfter`](Fault::CutAfter) a byte count drawn at random below this
    /// one for each request the rule fires on.
    CutWithin(u64),
    /// [`StallAfter`](Fault::StallAfter) a byte count drawn at random below
    /// this one for each request the rule fires on.
    StallWithin(u64),
    /// [`FlipByte`](Fault::FlipByte) at an offset drawn at random below this
    /// one for each request the rule fires on.
    FlipWithin(u64),
    /// Send this many body bytes, then one byte per interval: a connection that
    /// is never silent for long but never gets anywhere.
    TrickleAfter(u64, Duration),
    /// Wait this long before answering at all.
    Delay(Duration),
    /// Invert the byte at this offset of the body (counted from the body's start);
    /// for PutObject and UploadPart, of the body received.
    FlipByte(u64),
    /// Answer a ranged GET with the whole object and status 200.
    IgnoreRange,
    /// Answer a ranged GET with only the first N bytes of the range, saying so
    /// honestly in Content-Length and Content-Range.
    ShortRange(u64),
    /// Replace the object with these bytes just before serving this request.
    Replace(Bytes),
    /// Report a checksum header whose value is wrong (the body is intact).
    WrongChecksum,
    /// ListObjectsV2: end the page after its first entry and say it is truncated,
    /// but give no continuation token (what a store that ignores `list-type=2`
    /// and answers a V1 listing, with `NextMarker` or nothing, looks like).
    TruncatedWithoutToken,
    /// ListObjectsV2: end the page after its first entry, truncated, with the
    /// continuation token the request carried (or a fixed one): a listing that
    /// never advances.
    RepeatToken,
    /// ListObjectsV2: read the page, then wait this long before answering (the
    /// client gets a listing that is that old).
    AnswerLate(Duration),
    /// ListObjectsV2: leave out every object's Size.
    NoSize,
    /// Answer 403 AccessDenied to requests that name a version (a role with
    /// `s3:GetObject` but not `s3:GetObjectVersion`).
    DenyVersions,
    /// Hold the request before it is served until the test opens the gate:
    /// the client is paused at that request, for as long as the test needs
    /// (a race window held open, not a sleep).
    Hold(Gate),
    /// ListObjectsV2: read the page, then hold the answer until the test opens
    /// the gate (the client gets a listing as old as the test makes it).
    HoldAnswer(Gate),
    /// HeadObject: state this Content-Length, whatever the object holds (a
    /// broken or hostile store).
    ClaimSize(u64),
    /// HeadObject with partNumber: state that the upload has `count` parts of
    /// `part_size` bytes each (a broken or hostile store).
    ClaimParts { count: i32, part_size: u64 },
}

/// Requests held by [`Fault::Hold`] until [`Gate::open`].
#[derive(Debug, Clone)]
pub struct Gate(Arc<GateState>);

#[derive(Debug)]
struct GateState {
    reached: AtomicU64,
    arrived: tokio::sync::Notify,
    open: tokio::sync::watch::Sender<bool>,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new()
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(GateState {
            reached: AtomicU64::new(0),
            arrived: tokio::sync::Notify::new(),
            open: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// Waits until `n` requests have reached the gate; panics after 30 s.
    pub async fn reached(&self, n: u64) {
        let wait = async {
            loop {
                let arrived = self.0.arrived.notified();
                if self.0.reached.load(Ordering::SeqCst) >= n {
                    return;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("{n} requests did not reach the gate within 30 s"));
    }

    /// How many requests have reached the gate.
    pub fn count(&self) -> u64 {
        self.0.reached.load(Ordering::SeqCst)
    }

    /// Lets every held request (and every later one) through.
    pub fn open(&self) {
        self.0.open.send_replace(true);
    }

    pub(crate) async fn pass(&self) {
        let mut open = self.0.open.subscribe();
        self.0.reached.fetch_add(1, Ordering::SeqCst);
        self.0.arrived.notify_waiters();
        let _ = open.wait_for(|o| *o).await;
    }
}

/// Which of the matching requests a rule fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Only the Nth matching request (1-based).
    Nth(u64),
    /// The first N matching requests.
    First(u64),
    /// Every matching request.
    Always,
    /// Every matching request after the first N (the first N succeed).
    After(u64),
    /// Each matching request with a chance of one in N, drawn from the
    /// rules' random sequence (see [`Faults::seed`]).
    OneIn(u64),
}

/// One fault rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Operation name as in the request log (`GetObject`, `ListObjectsV2`,
    /// ...), or `*` for every operation.
    pub op: &'static str,
    /// Only requests for this key (any key when `None`).
    pub key: Option<String>,
    pub when: When,
    pub fault: Fault,
}

impl Rule {
    pub fn new(op: &'static str, when: When, fault: Fault) -> Rule {
        Rule { op, key: None, when, fault }
    }

    pub fn for_key(mut self, key: impl Into<String>) -> Rule {
        self.key = Some(key.into());
        self
    }
}

#[derive(Debug)]
struct Armed {
    rule: Rule,
    seen: u64,
    fired: u64,
}

/// The server's fault rules; empty by default (no faults).
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Rules>,
}

#[derive(Debug, Default)]
struct Rules {
    armed: Vec<Armed>,
    /// Behind [`When::OneIn`] and the byte counts of [`Fault::CutWithin`],
    /// [`Fault::StallWithin`] and [`Fault::FlipWithin`].
    random: Random,
}

/// A sequence of numbers that look random (SplitMix64), the same for the
/// same seed: every seed, 0 included, gives a good one.
#[derive(Debug, Default, Clone)]
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True about once in `n` calls.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n.max(1)) == 0
    }
}

impl Faults {
    /// Adds a rule; returns its index for [`fired`](Self::fired).
    pub fn add(&self, rule: Rule) -> usize {
        let mut rules = self.rules.lock().unwrap();
        rules.armed.push(Armed { rule, seen: 0, fired: 0 });
        rules.armed.len() - 1
    }

    /// Removes rule `i` (the indexes of later rules do not change: it is
    /// left in place, matching nothing).
    pub fn remove(&self, i: usize) {
        if let Some(a) = self.rules.lock().unwrap().armed.get_mut(i) {
            a.rule.op = "";
        }
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap().armed.clear();
    }

    /// Starts the random sequence behind [`When::OneIn`] and the random byte
    /// counts again from `seed`: the same requests then meet the same faults.
    pub fn seed(&self, seed: u64) {
        self.rules.lock().unwrap().random = Random::new(seed);
    }

    /// How many requests rule `i` has failed so far.
    pub fn fired(&self, i: usize) -> u64 {
        self.rules.lock().unwrap().armed.get(i).map_or(0, |a| a.fired)
    }

    /// The fault for this request, if a rule fires. Every matching rule counts the
    /// request; the first that fires wins.
    pub(crate) fn take(&self, op: &str, key: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let Rules { armed, .. } = &mut *rules;
        let mut out = None;
        let mut draws = Vec::new();
        for (i, a) in armed.iter_mut().enumerate() {
            if (a.rule.op != op && a.rule.op != "*") || a.rule.key.as_deref().is_some_and(|k| k != key) {
                continue;
            }
            a.seen += 1;
            let fire = match a.rule.when {
                When::Nth(n) => a.seen == n,
                When::First(n) => a.seen <= n,
                When::Always => true,
                When::After(n) => a.seen > n,
                // Drawn below, once the borrow of the rules ends.
                When::OneIn(_) => {
                    draws.push(i);
                    false
                }
            };
            if fire && out.is_none() {
                a.fired += 1;
                out = Some(i);
            }
        }
        // Rules drawn at random fire only if no rule before them did.
        for i in draws {
            if out.is_some_and(|o| o < i) {
                break;
            }
            let When::OneIn(n) = rules.armed[i].rule.when else { unreachable!() };
            if rules.random.one_in(n) {
                if let Some(o) = out {
                    rules.armed[o].fired -= 1;
                }
                rules.armed[i].fired += 1;
                out = Some(i);
                break;
            }
        }
        let fault = rules.armed[out?].rule.fault.clone();
        Some(match fault {
            Fault::CutWithin(max) => Fault::CutAfter(rules.random.below(max)),
            Fault::StallWithin(max) => Fault::StallAfter(rules.random.below(max)),
            Fault::FlipWithin(max) => Fault::FlipByte(rules.random.below(max)),
            f => f,
        })
    }
}

/// A fault that acts inside a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    Cut(u64),
    End(u64),
    Stall(u64),
    Flip(u64),
    Trickle(u64, Duration),
}

impl Fault {
    pub(crate) fn body_fault(&self) -> Option<BodyFault> {
        match *self {
            Fault::CutAfter(n) => Some(BodyFault::Cut(n)),
            Fault::EndAfter(n) => Some(BodyFault::End(n)),
            Fault::StallAfter(n) => Some(BodyFault::Stall(n)),
            Fault::FlipByte(n) => Some(BodyFault::Flip(n)),
            Fault::TrickleAfter(n, every) => Some(BodyFault::Trickle(n, every)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_fire_on_the_requests_they_name() {
        let f = Faults::default();
        let nth = f.add(Rule::new("GetObject", When::Nth(2), Fault::CutAfter(1)));
        let first = f.add(Rule::new("ListObjectsV2", When::First(2), Fault::IgnoreRange));
        let keyed = f.add(Rule::new("HeadObject", When::Always, Fault::WrongChecksum).for_key("k"));
        assert!(f.take("GetObject", "a").is_none());
        assert!(matches!(f.take("GetObject", "a"), Some(Fault::CutAfter(1))));
        assert!(f.take("GetObject", "a").is_none());
        assert!(f.take("ListObjectsV2", "").is_some());
        assert!(f.take("ListObjectsV2", "").is_some());
        assert!(f.take("ListObjectsV2", "").is_none());
        assert!(f.take("HeadObject", "other").is_none());
        assert!(f.take("HeadObject", "k").is_some());
        assert_eq!((f.fired(nth), f.fired(first), f.fired(keyed)), (1, 2, 1));
    }

    #[test]
    fn rules_drawn_at_random_fire_about_as_often_as_they_say_and_draw_their_byte_counts() {
        let f = Faults::default();
        f.seed(7);
        let first = f.add(Rule::new("GetObject", When::Nth(3), Fault::IgnoreRange));
        let cut = f.add(Rule::new("GetObject", When::OneIn(10), Fault::CutWithin(1000)));
        let any = f.add(Rule::new("*", When::OneIn(100), Fault::Status { status: 503, code: "SlowDown" }));
        let mut counts = Vec::new();
        for i in 1..=10_000u64 {
            match f.take("GetObject", "k") {
                Some(Fault::IgnoreRange) => assert_eq!(i, 3, "the rule before the drawn ones wins"),
                Some(Fault::CutAfter(n)) => counts.push(n),
                Some(Fault::Status { status: 503, .. }) => {}
                None => {}
                other => panic!("unexpected fault {other:?}"),
            }
        }
        for _ in 0..10_000 {
            let _ = f.take("HeadObject", "k");
        }
        assert_eq!(f.fired(first), 1);
        assert_eq!(counts.len() as u64, f.fired(cut));
        assert!((800..1200).contains(&counts.len()), "one in 10 of 10,000: {}", counts.len());
        assert!(counts.iter().all(|&n| n < 1000));
        assert!(
            counts.iter().collect::<std::collections::BTreeSet<_>>().len() > 500,
            "byte counts drawn anew each time"
        );
        // `*` matches every operation; on GetObject it comes after the cut.
        assert!((100..300).contains(&f.fired(any)), "one in 100 of 20,000 less what the cut took: {}", f.fired(any));
        // The same seed, the same faults.
        let g = Faults::default();
        g.seed(7);
        g.add(Rule::new("GetObject", When::Nth(3), Fault::IgnoreRange));
        g.add(Rule::new("GetObject", When::OneIn(10), Fault::CutWithin(1000)));
        g.add(Rule::new("*", When::OneIn(100), Fault::Status { status: 503, code: "SlowDown" }));
        let again: Vec<u64> = (0..10_000)
            .filter_map(|_| match g.take("GetObject", "k") {
                Some(Fault::CutAfter(n)) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(&again[..50], &counts[..50]);
    }
}
