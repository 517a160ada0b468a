use std::sync::Arc;

use super::{parse, Hello, MAX_HELLO};

/// A ClientHello body with the given extensions (none at all if `None`).
fn body(extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend([7u8; 32]);
    b.push(0); // session id
    b.extend([0, 2, 0x13, 0x01]); // one cipher suite
    b.extend([1, 0]); // null compression
    if let Some(exts) = extensions {
        let mut all = Vec::new();
        for (kind, data) in exts {
            all.extend(kind.to_be_bytes());
            all.extend((data.len() as u16).to_be_bytes());
            all.extend(data);
        }
        b.extend((all.len() as u16).to_be_bytes());
        b.extend(all);
    }
    b
}

/// A handshake message wrapping `body`, split into records of at most `record` bytes.
fn records(body: &[u8], record: usize) -> Vec<u8> {
    let len = body.len() as u32;
    let mut hs = vec![1, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    hs.extend(body);
    let mut out = Vec::new();
    for chunk in hs.chunks(record) {
        out.extend([22, 3, 1]);
        out.extend((chunk.len() as u16).to_be_bytes());
        out.extend(chunk);
    }
    out
}

/// A `server_name` extension with the given (type, name) entries.
fn sni_ext(names: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend((name.len() as u16).to_be_bytes());
        list.extend(*name);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend(list);
    (0, data)
}

fn hello_for(names: &[(u8, &[u8])]) -> Vec<u8> {
    records(&body(Some(&[(10, vec![0, 2, 0, 29]), sni_ext(names)])), 1 << 14)
}

fn sni(name: &str) -> Hello {
    Hello::Parsed { sni: Some(name.to_string()) }
}

#[test]
fn reads_the_host_name_lowercased() {
    assert_eq!(parse(&hello_for(&[(0, b"API.Example.TEST.")])), sni("api.example.test"));
}

#[test]
fn a_hello_without_server_name_has_none() {
    let none = Hello::Parsed { sni: None };
    assert_eq!(parse(&records(&body(None), 1 << 14)), none);
    assert_eq!(parse(&records(&body(Some(&[(10, vec![0, 2, 0, 29])])), 1 << 14)), none);
    assert_eq!(parse(&hello_for(&[(1, b"not-a-host-name-type")])), none);
}

#[test]
fn other_name_types_are_skipped() {
    assert_eq!(parse(&hello_for(&[(7, b"\x00\x01"), (0, b"a.example.test")])), sni("a.example.test"));
}

#[test]
fn every_proper_prefix_is_incomplete_and_records_may_be_split() {
    for record in [1, 2, 7, 100, 1 << 14] {
        let bytes = records(&body(Some(&[sni_ext(&[(0, b"split.example.test")])])), record);
        for n in 0..bytes.len() {
            assert_eq!(parse(&bytes[..n]), Hello::Incomplete, "record {record}, prefix {n}");
        }
        assert_eq!(parse(&bytes), sni("split.example.test"));
    }
}

#[test]
fn other_protocols_are_not_tls() {
    for bytes in
        [&b"GET / HTTP/1.1\r\n"[..], b"SSH-2.0-OpenSSH_9.6\r\n", b"\x16\x02\x00", b"\x16\x03\x09\x00\x10", b"\x00"]
    {
        assert_eq!(parse(bytes), Hello::NotTls, "{bytes:?}");
    }
}

#[test]
fn bad_lengths_are_invalid() {
    assert!(matches!(parse(b"\x16\x03\x01\x00\x00"), Hello::Invalid(_)));
    assert!(matches!(parse(b"\x16\x03\x01\x40\x01"), Hello::Invalid(_)));
    let huge = (MAX_HELLO as u32 + 1).to_be_bytes();
    assert!(matches!(parse(&[22, 3, 1, 0, 4, 1, huge[1], huge[2], huge[3]]), Hello::Invalid(_)));
    // An extension whose length runs past the end of the block.
    let mut b = body(Some(&[sni_ext(&[(0, b"a.example.test")])]));
    let n = b.len();
    b[n - 20] = 0xff;
    assert!(matches!(parse(&records(&b, 1 << 14)), Hello::Invalid(_)));
    // Trailing bytes after the extensions.
    let mut b = body(Some(&[sni_ext(&[(0, b"a.example.test")])]));
    b.push(0);
    assert!(matches!(parse(&records(&b, 1 << 14)), Hello::Invalid(_)));
}

#[test]
fn ambiguous_names_are_invalid() {
    let cases: [&[(u8, &[u8])]; 7] = [
        &[(0, b"a.example.test"), (0, b"b.example.test")],
        &[(0, b"a.example.test"), (0, b"a.example.test")],
        &[(0, b"127.0.0.1")],
        &[(0, b"a example.test")],
        &[(0, b"a..example.test")],
        &[(0, b"")],
        &[(0, "é.example.test".as_bytes())],
    ];
    for names in cases {
        assert!(matches!(parse(&hello_for(names)), Hello::Invalid(_)), "{names:?}");
    }
    let twice = body(Some(&[sni_ext(&[(0, b"a.example.test")]), sni_ext(&[(0, b"b.example.test")])]));
    assert!(matches!(parse(&records(&twice, 1 << 14)), Hello::Invalid(_)));
}

#[test]
fn the_first_message_must_be_a_client_hello() {
    let mut bytes = hello_for(&[(0, b"a.example.test")]);
    bytes[5] = 2;
    assert!(matches!(parse(&bytes), Hello::Invalid(_)));
}

#[test]
fn a_real_rustls_hello_parses() {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("api.example.test").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut bytes = Vec::new();
    conn.write_tls(&mut bytes).expect("hello");
    assert_eq!(parse(&bytes), sni("api.example.test"));
}

/// xorshift64*: a fixed-seed generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn hostile_input_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let valid = hello_for(&[(0, b"fuzz.example.test"), (3, b"xx")]);
    for round in 0..20_000 {
        let bytes: Vec<u8> = match round % 3 {
            0 => (0..rng.below(600)).map(|_| rng.next() as u8).collect(),
            1 => {
                let mut b = vec![22, 3, 1];
                b.extend((0..rng.below(600)).map(|_| rng.next() as u8));
                b
            }
            _ => {
                let mut b = valid.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                b.truncate(rng.below(b.len() + 1));
                b
            }
        };
        if let Hello::Parsed { sni: Some(name) } = parse(&bytes) {
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)));
        }
    }
}

#[test]
fn an_encrypted_client_hello_or_an_ip_as_server_name_is_refused() {
    // ECH: the outer SNI is a cover for a name the proxy can't see.
    let ech = (0xfe0d, vec![0, 0, 1, 0, 1, 7, 0, 0, 0, 0]);
    let with_ech = records(&body(Some(&[sni_ext(&[(0, b"cover.example.test")]), ech])), 1 << 14);
    match parse(&with_ech) {
        Hello::Invalid(why) => assert!(why.contains("encrypted_client_hello"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The same hello without it is fine.
    assert_eq!(parse(&hello_for(&[(0, b"cover.example.test")])), sni("cover.example.test"));
    for ip in [&b"127.0.0.1"[..], b"10.0.0.1.", b"169.254.169.254"] {
        assert!(matches!(parse(&hello_for(&[(0, ip)])), Hello::Invalid(_)), "{ip:?}");
    }
}
