//! The guest's resolver on port 53: UDP questions are forwarded over one vsock
//! stream to the host (DNS-over-TCP framing), TCP connections are relayed.
//!
//! Question IDs are rewritten so answers from the host find their client even
//! when two clients picked the same ID; the table of questions in flight is
//! bounded and forgets questions older than [`PENDING_TTL`].

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::vsock::VsockStream;
use crate::log::log;
use moat_proto::egress::DNS_PORT;

/// Largest DNS message forwarded (EDNS0's usual UDP payload size).
const MAX_MESSAGE: usize = 4096;
/// Questions in flight at most; the oldest is forgotten beyond this.
const MAX_PENDING: usize = 1024;
/// How long a question waits for its answer.
const PENDING_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Pending {
    client: SocketAddr,
    client_id: u16,
    asked: Instant,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u16,
    pending: HashMap<u16, Pending>,
}

impl Table {
    /// Records a question and returns the ID to send upstream.
    fn insert(&mut self, p: Pending) -> u16 {
        let now = p.asked;
        self.pending.retain(|_, q| now.duration_since(q.asked) < PENDING_TTL);
        if self.pending.len() >= MAX_PENDING {
            if let Some(oldest) = self.pending.iter().min_by_key(|(_, q)| q.asked).map(|(id, _)| *id) {
                self.pending.remove(&oldest);
            }
        }
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if !self.pending.contains_key(&self.next_id) {
                break;
            }
        }
        self.pending.insert(self.next_id, p);
        self.next_id
    }
}

/// Serves UDP questions on `socket` forever.
pub fn serve_udp(socket: UdpSocket) {
    let socket = Arc::new(socket);
    let table = Arc::new(Mutex::new(Table::default()));
    let mut upstream: Option<VsockStream> = None;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, client) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                log!("dns: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if n < 12 {
            continue; // Not even a header.
        }
        let msg = &mut buf[..n];
        let client_id = u16::from_be_bytes([msg[0], msg[1]]);
        let id = lock(&table).insert(Pending { client, client_id, asked: Instant::now() });
        msg[..2].copy_from_slice(&id.to_be_bytes());
        let mut framed = Vec::with_capacity(n + 2);
        framed.extend_from_slice(&(n as u16).to_be_bytes());
        framed.extend_from_slice(msg);
        // One reconnect: the host side may have closed an idle stream.
        for _ in 0..2 {
            if upstream.is_none() {
                upstream = connect(&socket, &table);
            }
            match upstream.as_mut().map(|s| s.write_all(&framed)) {
                Some(Ok(())) => break,
                Some(Err(_)) => upstream = None,
                None => break,
            }
        }
    }
}

/// Opens the stream to the host and starts the thread that hands answers back.
fn connect(socket: &Arc<UdpSocket>, table: &Arc<Mutex<Table>>) -> Option<VsockStream> {
    let stream = match VsockStream::connect_host(DNS_PORT, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            log!("dns: cannot reach the host resolver: {e}");
            return None;
        }
    };
    let mut reader = stream.try_clone().ok()?;
    let (socket, table) = (Arc::clone(socket), Arc::clone(table));
    let spawned = std::thread::Builder::new().name("dns-answers".into()).spawn(move || {
        let _ = answers(&mut reader, &socket, &table);
        reader.shutdown_both();
    });
    spawned.ok().map(|_| stream)
}

fn answers(reader: &mut VsockStream, socket: &UdpSocket, table: &Mutex<Table>) -> io::Result<()> {
    let mut len = [0u8; 2];
    let mut msg = vec![0u8; u16::MAX as usize];
    loop {
        reader.read_exact(&mut len)?;
        let n = u16::from_be_bytes(len) as usize;
        reader.read_exact(&mut msg[..n])?;
        if n < 12 {
            continue;
        }
        let id = u16::from_be_bytes([msg[0], msg[1]]);
        let Some(p) = lock(table).pending.remove(&id) else { continue };
        msg[..2].copy_from_slice(&p.client_id.to_be_bytes());
        let _ = socket.send_to(&msg[..n], p.client);
    }
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(at: Instant, port: u16) -> Pending {
        Pending { client: SocketAddr::from(([127, 0, 0, 1], port)), client_id: 7, asked: at }
    }

    #[test]
    fn ids_are_unique_while_in_flight_and_the_table_is_bounded() {
        let mut t = Table::default();
        let now = Instant::now();
        let mut ids = std::collections::HashSet::new();
        for i in 0..(MAX_PENDING + 50) {
            ids.insert(t.insert(pending(now, i as u16)));
        }
        assert_eq!(ids.len(), MAX_PENDING + 50, "every question got its own ID");
        assert_eq!(t.pending.len(), MAX_PENDING);
    }

    #[test]
    fn stale_questions_are_forgotten() {
        let mut t = Table::default();
        let then = Instant::now();
        t.insert(pending(then, 1));
        t.insert(pending(then + PENDING_TTL + Duration::from_secs(1), 2));
        assert_eq!(t.pending.len(), 1);
    }
}
