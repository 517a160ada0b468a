//! The stream transport (DNS-over-TCP framing) end to end over loopback TCP.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;
use crate::dns::{ServeError, MAX_MESSAGE};

/// Serves one connection on a loopback port; returns the client side and
/// the server's result.
async fn serve_one(s: Setup) -> (TcpStream, JoinHandle<Result<(), ServeError>>, Arc<Collect>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::clone(&s.log);
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        s.responder.serve_stream(stream).await
    });
    (TcpStream::connect(addr).await.unwrap(), server, log)
}

fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let len = stream.read_u16().await.unwrap();
    let mut msg = vec![0; usize::from(len)];
    stream.read_exact(&mut msg).await.unwrap();
    msg
}

#[tokio::test]
async fn many_queries_per_stream_in_order() {
    let (mut client, server, log) = serve_one(setup(Preset::DenyAll, &["allow network **.example.com"])).await;
    let queries = [
        Query { id: 1, ..Query::new("a.example.com", A) },
        Query { id: 2, ..Query::new("evil.test", A) },
        Query { id: 3, edns: Some(0), ..Query::new("b.example.com", AAAA) },
    ];
    // Pipelined in one write, and a split write of the fourth.
    let all: Vec<u8> = queries.iter().flat_map(|q| frame(&q.bytes())).collect();
    client.write_all(&all).await.unwrap();
    let fourth = frame(&Query { id: 4, ..Query::new("a.example.com", A) }.bytes());
    client.write_all(&fourth[..1]).await.unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    client.write_all(&fourth[1..]).await.unwrap();

    let replies: Vec<Decoded> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(decode(&read_frame(&mut client).await));
        }
        out
    };
    assert_eq!(replies.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(replies.iter().map(|r| r.rcode).collect::<Vec<_>>(), [NOERROR, NXDOMAIN, NOERROR, NOERROR]);
    assert_eq!(replies[0].a(), replies[3].a());
    assert!(replies[0].a().is_some());

    drop(client);
    server.await.unwrap().unwrap();
    assert_eq!(log.take().len(), 3, "the repeat of a.example.com is not logged again");
}

#[tokio::test]
async fn malformed_messages_in_good_frames_get_formerr() {
    let (mut client, server, _) = serve_one(setup(Preset::AllowAll, &[])).await;
    client.write_all(&frame(&[0x12, 0x34, 0x00])).await.unwrap();
    let reply = decode(&read_frame(&mut client).await);
    assert_eq!((reply.id, reply.rcode), (0x1234, FORMERR));
    // The stream stays usable.
    client.write_all(&frame(&Query::new("example.com", A).bytes())).await.unwrap();
    assert_eq!(decode(&read_frame(&mut client).await).rcode, NOERROR);
    drop(client);
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_framing_closes_the_stream() {
    for len in [0u16, MAX_MESSAGE as u16 + 1, u16::MAX] {
        let (mut client, server, _) = serve_one(setup(Preset::AllowAll, &[])).await;
        client.write_all(&len.to_be_bytes()).await.unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(matches!(err, ServeError::Frame(n) if n == usize::from(len)), "{err}");
        assert!(err.to_string().contains("closing the stream"));
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0, "closed without a reply");
    }
}

#[tokio::test]
async fn a_truncated_frame_ends_the_stream() {
    let (mut client, server, _) = serve_one(setup(Preset::AllowAll, &[])).await;
    let whole = frame(&Query::new("example.com", A).bytes());
    client.write_all(&whole[..whole.len() - 3]).await.unwrap();
    client.shutdown().await.unwrap();
    let err = server.await.unwrap().unwrap_err();
    assert!(matches!(err, ServeError::Io(_)), "{err}");
}

#[tokio::test]
async fn an_in_memory_stream_works_too() {
    let s = setup(Preset::AllowAll, &[]);
    let (mut client, server) = tokio::io::duplex(64);
    let serve = async move { s.responder.serve_stream(server).await };
    let talk = async move {
        client.write_all(&frame(&Query::new("example.com", A).bytes())).await.unwrap();
        let len = client.read_u16().await.unwrap();
        let mut msg = vec![0; usize::from(len)];
        client.read_exact(&mut msg).await.unwrap();
        drop(client);
        decode(&msg)
    };
    let (served, reply) = tokio::join!(serve, talk);
    served.unwrap();
    assert!(reply.a().is_some());
}

/// A setup whose streams have short deadlines: `idle` between messages,
/// `message` for one message.
fn hurried(idle_ms: u64, message_ms: u64) -> Setup {
    let s = setup(Preset::AllowAll, &[]);
    let (idle, message) = (Duration::from_millis(idle_ms), Duration::from_millis(message_ms));
    Setup { responder: s.responder.with_deadlines(idle, message), ..s }
}

#[tokio::test]
async fn a_stream_that_trickles_a_message_is_cut_at_the_message_deadline() {
    let (mut client, server, _) = serve_one(hurried(10_000, 300)).await;
    let whole = frame(&Query::new("example.com", A).bytes());
    // One byte every 100 ms: each read makes progress, the message never completes in time.
    let trickle = tokio::spawn(async move {
        for byte in whole {
            if client.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client
    });
    let err = tokio::time::timeout(Duration::from_secs(10), server).await.expect("cut").unwrap().unwrap_err();
    assert!(matches!(err, ServeError::Slow(_)), "{err}");
    trickle.abort();
}

#[tokio::test]
async fn a_silent_stream_is_closed_and_a_busy_one_is_not() {
    let (mut client, server, _) = serve_one(hurried(400, 5_000)).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(&frame(&Query::new("example.com", A).bytes())).await.unwrap();
        assert_eq!(decode(&read_frame(&mut client).await).rcode, NOERROR);
    }
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("closed when idle").unwrap().unwrap();
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
}
