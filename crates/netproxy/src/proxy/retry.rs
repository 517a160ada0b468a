//! A second ClientHello: in TLS 1.3 a server may answer the first with a
//! HelloRetryRequest, and the client then sends another ClientHello — in
//! the clear, with its own server name. A relayed tunnel was checked on the
//! first; a guest could name an allowed host there and another in the
//! second (domain fronting past the check). So before a TLS tunnel is left
//! to copy bytes, the proxy watches the server's first message; if it is a
//! HelloRetryRequest, the next ClientHello must name the same host and pass
//! the same checks (no ECH), or the tunnel is cut before it reaches the
//! server.

use std::time::Duration;

use super::io::Conn;
use super::sni::{self, Hello, MAX_INPUT};

/// The `random` of a ServerHello that is a HelloRetryRequest (RFC 8446 §4.1.3).
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2, 0xa2, 0x11,
    0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];
const HANDSHAKE: u8 = 22;
const CHANGE_CIPHER_SPEC: u8 = 20;
const SERVER_HELLO: u8 = 2;
/// Record header, handshake header, legacy version, random.
const HELLO_PREFIX: usize = 5 + 4 + 2 + 32;

/// What the server's first bytes say.
#[derive(Debug, PartialEq, Eq)]
enum First {
    NeedMore,
    Retry,
    Other,
}

fn server_first(buf: &[u8]) -> First {
    match buf {
        [] => First::NeedMore,
        [HANDSHAKE, ..] if buf.len() < HELLO_PREFIX => First::NeedMore,
        [HANDSHAKE, _, _, _, _, SERVER_HELLO, ..] if buf[11..HELLO_PREFIX] == HELLO_RETRY_RANDOM => First::Retry,
        _ => First::Other,
    }
}

/// Relays the handshake's first round trip; if the server asks the client
/// to retry, checks the second ClientHello against `name` (the first one's
/// server name) before it goes on. Each wait is bounded by `wait`. On `Ok`
/// the caller copies the rest; on `Err` it cuts the tunnel.
pub(crate) async fn watch(client: &mut Conn, server: &mut Conn, name: &str, wait: Duration) -> Result<(), String> {
    pass_on(client, server).await?;
    // The server's first message, passed on as it comes.
    let first = loop {
        let seen = server_first(server.buffered());
        if seen != First::NeedMore {
            break seen;
        }
        if fill(server, wait).await? == 0 {
            return Ok(());
        }
    };
    pass_on(server, client).await?;
    if first == First::Other {
        return Ok(());
    }
    // A middlebox-compatibility ChangeCipherSpec may come first.
    loop {
        let buf = client.buffered();
        match buf {
            [CHANGE_CIPHER_SPEC, _, _, 0, 1, _, ..] => {
                let ccs = buf[..6].to_vec();
                client.consume(6);
                server.write_all(&ccs).await.map_err(|e| format!("relaying failed: {e}"))?;
                continue;
            }
            [CHANGE_CIPHER_SPEC, rest @ ..] if rest.len() < 5 => {
                if fill(client, wait).await? == 0 {
                    return Ok(());
                }
                continue;
            }
            _ => {}
        }
        match sni::parse(buf) {
            Hello::Incomplete if buf.len() < MAX_INPUT => {}
            Hello::Incomplete => return Err("the second ClientHello is too large".to_string()),
            Hello::NotTls => return Err("after a HelloRetryRequest the client sent no second ClientHello".into()),
            Hello::Invalid(why) => return Err(format!("refused the second ClientHello: {why}")),
            Hello::Parsed { sni: Some(second) } if second == name => return pass_on(client, server).await,
            Hello::Parsed { sni } => {
                return Err(format!(
                    "the second ClientHello (after a HelloRetryRequest) names {} instead of {name}",
                    sni.as_deref().unwrap_or("no server")
                ))
            }
        }
        if fill(client, wait).await? == 0 {
            return Ok(());
        }
    }
}

/// Writes what `from` has read ahead to `to`.
async fn pass_on(from: &mut Conn, to: &mut Conn) -> Result<(), String> {
    let bytes = from.buffered().to_vec();
    from.consume(bytes.len());
    to.write_all(&bytes).await.map_err(|e| format!("relaying failed: {e}"))
}

async fn fill(conn: &mut Conn, wait: Duration) -> Result<usize, String> {
    match tokio::time::timeout(wait, conn.fill()).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(format!("the TLS handshake failed: {e}")),
        Err(_) => Err("the TLS handshake stalled".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_hello_with_the_retry_random_is_a_retry() {
        let mut hrr = vec![HANDSHAKE, 3, 3, 0, 60, SERVER_HELLO, 0, 0, 56, 3, 3];
        hrr.extend(HELLO_RETRY_RANDOM);
        assert_eq!(server_first(&hrr), First::Retry);
        assert_eq!(server_first(&hrr[..HELLO_PREFIX - 1]), First::NeedMore);
        let mut plain = hrr.clone();
        plain[20] ^= 1;
        assert_eq!(server_first(&plain), First::Other);
        let mut not_hello = hrr.clone();
        not_hello[5] = 11;
        assert_eq!(server_first(&not_hello), First::Other);
        assert_eq!(server_first(&[21, 3, 3, 0, 2, 2, 40]), First::Other, "an alert");
    }
}
