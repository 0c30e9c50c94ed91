//! A DNS server for tests: answers `A` queries for the names it was given and
//! NXDOMAIN for every other name (NOERROR with no answer for other record
//! types of a known name), over UDP, and records every query in order. The
//! wire format is hickory-proto's.
//!
//! `/etc/resolv.conf` cannot name a port, so the server listens on port 53 of
//! a loopback address of its own (127.x.y.z, chosen at random): tests that run
//! at once do not collide, and binding port 53 needs root, as the image tests
//! already do for `chroot`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

/// A running DNS server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    queries: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Serves `names` (lower case, without the final dot) on port 53 of a
    /// random loopback address.
    pub async fn start(names: HashMap<String, Ipv4Addr>) -> std::io::Result<DnsServer> {
        let mut last = None;
        for _ in 0..20 {
            let r = rand_loopback();
            match UdpSocket::bind((r, 53)).await {
                Ok(socket) => return Ok(Self::serve(socket, names)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }

    fn serve(socket: UdpSocket, names: HashMap<String, Ipv4Addr>) -> DnsServer {
        let addr = socket.local_addr().expect("bound");
        let queries: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let seen = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else { return };
                let Ok(request) = Message::from_vec(&buf[..n]) else { continue };
                let answer = respond(&request, &names, &seen);
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        DnsServer { addr, queries, task }
    }

    /// The address to put in `resolv.conf` (`nameserver`).
    pub fn ip(&self) -> std::net::IpAddr {
        self.addr.ip()
    }

    /// Every query so far: the name asked (lower case, no final dot) and its
    /// type (`A`, `AAAA`, ...).
    pub fn queries(&self) -> Vec<(String, String)> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(request: &Message, names: &HashMap<String, Ipv4Addr>, seen: &Mutex<Vec<(String, String)>>) -> Message {
    let mut answer = Message::response(request.metadata.id, request.metadata.op_code);
    answer.metadata.message_type = MessageType::Response;
    answer.metadata.recursion_desired = request.metadata.recursion_desired;
    answer.metadata.recursion_available = true;
    answer.metadata.authoritative = true;
    let Some(query) = request.queries.first() else {
        answer.metadata.response_code = ResponseCode::FormErr;
        return answer;
    };
    answer.add_query(query.clone());
    let name = query.name().to_lowercase().to_ascii();
    let name = name.trim_end_matches('.').to_string();
    seen.lock().unwrap().push((name.clone(), query.query_type().to_string()));
    match names.get(&name) {
        None => answer.metadata.response_code = ResponseCode::NXDomain,
        Some(ip) if query.query_type() == RecordType::A => {
            answer.add_answer(Record::from_rdata(query.name().clone(), 60, RData::A(A(*ip))));
        }
        // A known name without records of this type: NOERROR, no answer.
        Some(_) => {}
    }
    answer
}

/// A loopback address other than 127.0.0.x, picked from the clock and a counter.
fn rand_loopback() -> Ipv4Addr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let n = nanos.wrapping_mul(2654435761).wrapping_add(NEXT.fetch_add(7919, Ordering::Relaxed));
    let [_, b, c, d] = n.to_be_bytes();
    Ipv4Addr::new(127, b.max(1), c, d.clamp(1, 254))
}
