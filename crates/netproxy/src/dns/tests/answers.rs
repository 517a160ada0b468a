//! What the responder answers, and what it logs.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::dns::{BURST, GATEWAY, TTL, WINDOW};
use crate::log::{LogMode, LogVerdict};

fn rules() -> Setup {
    setup(
        Preset::DenyAll,
        &[
            "allow network api.github.com",
            "allow network db.internal.example:5432",
            "allow network **.example.com",
            "deny network secret.example.com",
            "allow network only-web.example.org --sandbox web",
            "allow network only-other.example.org --sandbox other",
        ],
    )
}

#[test]
fn an_allowed_name_gets_a_stable_fake_address() {
    let s = rules();
    let reply = s.ask(&Query::new("API.GitHub.com", A));
    assert_eq!(reply.rcode, NOERROR);
    let ip = reply.a().unwrap();
    assert!(FakeIps::in_range(ip) && ip != GATEWAY, "{ip}");
    assert_eq!(reply.answers[0].1, TTL);
    assert_eq!(reply.question, Some((encode_name("API.GitHub.com"), A, 1)), "question echoed, case kept");
    assert_eq!(reply.flags & 0x8000, 0x8000, "QR");
    assert_eq!(reply.flags & 0x0100, 0x0100, "RD echoed");
    assert_eq!(reply.flags & 0x0080, 0x0080, "RA");
    assert_eq!(reply.flags & 0x0400, 0, "not authoritative");

    assert_eq!(s.ask(&Query::new("api.github.com.", A)).a(), Some(ip), "stable");
    assert_eq!(s.fake.lookup_ip(ip).as_deref(), Some("api.github.com"));
    let other = s.ask(&Query::new("db.internal.example", A)).a().unwrap();
    assert_ne!(other, ip);
    assert!(s.ask(&Query::new("a.b.example.com", A)).a().is_some());
    assert!(s.ask(&Query::new("only-web.example.org", A)).a().is_some(), "sandbox rule");
}

#[test]
fn denied_names_are_nxdomain_for_every_type() {
    let s = rules();
    for name in ["secret.example.com", "example.com", "only-other.example.org", "aGVsbG8.exfil.attacker.net"] {
        for qtype in [A, AAAA, TXT, 15, 33, 255, PTR] {
            let reply = s.ask(&Query::new(name, qtype));
            assert_eq!(reply.rcode, NXDOMAIN, "{name} type {qtype}");
            assert!(reply.answers.is_empty());
            assert!(reply.question.is_some());
        }
    }
    assert!(s.fake.is_empty(), "no address handed out for a denied name");
}

#[test]
fn other_types_for_allowed_names_are_empty() {
    let s = rules();
    for qtype in [AAAA, TXT, 15, 33, 65, 255] {
        let reply = s.ask(&Query::new("api.github.com", qtype));
        assert_eq!((reply.rcode, reply.answers.len()), (NOERROR, 0), "type {qtype}");
    }
    assert!(s.fake.is_empty(), "only A queries assign addresses");
}

#[test]
fn names_that_are_not_host_names_are_nxdomain() {
    let s = setup(Preset::AllowAll, &[]);
    for name in ["a\\.b.example.com", "sp ace.example.com", "x\\\u{7}.com", "1.2.3.4", "."] {
        assert_eq!(s.ask(&Query::new(name, A)).rcode, NXDOMAIN, "{name:?}");
    }
    assert!(s.ask(&Query::new("anything.example.net", A)).a().is_some(), "allow-all resolves the rest");
}

#[test]
fn built_in_names() {
    let s = setup(Preset::DenyAll, &[]);
    assert_eq!(s.ask(&Query::new("gateway.moat.internal", A)).a(), Some(GATEWAY));
    assert_eq!(s.ask(&Query::new("localhost", A)).a(), Some(Ipv4Addr::LOCALHOST));
    assert_eq!(s.ask(&Query::new("db.localhost", A)).a(), Some(Ipv4Addr::LOCALHOST));
    let aaaa = s.ask(&Query::new("gateway.moat.internal", AAAA));
    assert_eq!((aaaa.rcode, aaaa.answers.len()), (NOERROR, 0));
    assert_eq!(s.ask(&Query::new("other.moat.internal", A)).rcode, NXDOMAIN);
    let all = setup(Preset::AllowAll, &[]);
    assert_eq!(all.ask(&Query::new("other.moat.internal", A)).rcode, NXDOMAIN, "reserved even under allow-all");
}

#[test]
fn reverse_lookups_name_only_fake_addresses() {
    let s = rules();
    let ip = s.ask(&Query::new("api.github.com", A)).a().unwrap();
    let [a, b, c, d] = ip.octets();
    let reply = s.ask(&Query::new(&format!("{d}.{c}.{b}.{a}.in-addr.arpa"), PTR));
    assert_eq!(reply.rcode, NOERROR);
    assert_eq!(reply.answers, [(PTR, TTL, encode_name("api.github.com"))]);

    let gw = s.ask(&Query::new("1.0.18.198.in-addr.arpa.", PTR));
    assert_eq!(gw.answers, [(PTR, TTL, encode_name("gateway.moat.internal"))]);
    for unknown in ["200.0.18.198.in-addr.arpa", "8.8.8.8.in-addr.arpa", "1.0.0.127.in-addr.arpa", "x.in-addr.arpa"] {
        assert_eq!(s.ask(&Query::new(unknown, PTR)).rcode, NXDOMAIN, "{unknown}");
    }
}

#[test]
fn refused_and_not_implemented() {
    let s = setup(Preset::AllowAll, &[]);
    let chaos = Query { qclass: 3, ..Query::new("version.bind", TXT) };
    assert_eq!(s.ask(&chaos).rcode, REFUSED);
    assert_eq!(s.ask(&Query::new("example.com", 252)).rcode, REFUSED, "AXFR");
    let status = Query { flags: 2 << 11, ..Query::new("example.com", A) };
    let reply = s.ask(&status);
    assert_eq!((reply.rcode, reply.flags & 0x7800), (NOTIMP, 2 << 11), "opcode echoed");
    assert!(reply.question.is_none());
}

#[test]
fn edns_is_echoed_and_versions_checked() {
    let s = setup(Preset::AllowAll, &[]);
    let reply = s.ask(&Query { edns: Some(0), ..Query::new("example.com", A) });
    assert_eq!(reply.rcode, NOERROR);
    assert_eq!(reply.opt, Some(0), "version 0, no DO bit: we do not sign");
    assert!(reply.a().is_some());
    let reply = s.ask(&Query { edns: Some(1), ..Query::new("example.com", A) });
    assert_eq!(reply.rcode, BADVERS);
    assert_eq!(reply.flags & 0xF, 0, "the low bits of BADVERS are 0");
    assert_eq!(s.ask(&Query::new("example.com", A)).opt, None, "no OPT unless asked");
}

#[test]
fn rd_and_cd_are_echoed() {
    let s = setup(Preset::AllowAll, &[]);
    let reply = s.ask(&Query { flags: 0x0010, ..Query::new("example.com", A) });
    assert_eq!(reply.flags & 0x0110, 0x0010);
}

#[test]
fn policy_changes_apply_to_the_next_query() {
    let s = setup(Preset::DenyAll, &[]);
    assert_eq!(s.ask(&Query::new("new.example.com", A)).rcode, NXDOMAIN);
    s.policy.update(Preset::DenyAll, &["allow network new.example.com:8443".parse().unwrap()]);
    assert!(s.ask(&Query::new("new.example.com", A)).a().is_some());
}

#[test]
fn queries_are_logged_with_their_rule() {
    let s = rules();
    s.ask(&Query::new("api.github.com", A));
    s.ask(&Query::new("secret.example.com", A));
    s.ask(&Query::new("nope.example.net", AAAA));
    let records = s.log.take();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!((r.method.as_str(), r.mode, r.port, r.sandbox.as_str()), ("DNS", LogMode::Dns, 53, "web"));
        assert!(r.bytes_up > 12 && r.bytes_down > 12);
    }
    assert_eq!((records[0].host.as_str(), records[0].verdict), ("api.github.com", LogVerdict::Allowed));
    assert_eq!(records[0].rule.as_deref(), Some("rule 'allow network api.github.com'"));
    assert!(records[0].note.as_deref().unwrap().starts_with("A 198.18."));
    assert_eq!((records[1].host.as_str(), records[1].verdict), ("secret.example.com", LogVerdict::Denied));
    assert_eq!(records[1].rule.as_deref(), Some("rule 'deny network secret.example.com'"));
    assert_eq!(records[2].rule.as_deref(), Some("preset deny-all (default deny)"));
}

#[test]
fn hostile_names_are_logged_escaped() {
    let s = setup(Preset::AllowAll, &[]);
    s.ask(&Query::new("a\\.b.Ex\\\u{1}.com", A));
    let records = s.log.take();
    assert_eq!(records[0].host, "a\\046b.ex\\001.com");
    assert_eq!(records[0].verdict, LogVerdict::Denied);
}

#[test]
fn repeats_are_logged_once_per_window() {
    let s = rules();
    let t0 = Instant::now();
    let query = Query::new("api.github.com", A).bytes();
    for i in 0..50 {
        s.responder.answer_at(&query, t0 + Duration::from_millis(i * 100));
    }
    s.responder.answer_at(&Query::new("api.github.com", AAAA).bytes(), t0);
    assert_eq!(s.log.take().len(), 1, "A and AAAA for one name share a window");
    s.responder.answer_at(&query, t0 + WINDOW + Duration::from_secs(1));
    let records = s.log.take();
    assert_eq!(records.len(), 1);
    assert!(records[0].note.as_deref().unwrap().contains("50 repeats in the previous 10 s not logged"));
}

#[test]
fn a_flood_of_fresh_names_is_rate_limited() {
    let s = rules();
    let t0 = Instant::now();
    for i in 0..5000 {
        let name = format!("chunk{i}.exfil.attacker.net");
        assert_eq!(decode(&s.responder.answer_at(&Query::new(&name, A).bytes(), t0)).rcode, NXDOMAIN);
    }
    assert_eq!(s.log.take().len(), BURST as usize);
    s.responder.answer_at(&Query::new("later.attacker.net", A).bytes(), t0 + Duration::from_secs(1));
    let records = s.log.take();
    assert!(records[0].note.as_deref().unwrap().contains("4900 other DNS queries not logged"));
}

#[test]
fn without_a_sink_nothing_is_logged() {
    let policy = Arc::new(Policy::new(Preset::AllowAll, &[]));
    let r = Responder::new(policy, Arc::new(FakeIps::default()), None, "web".into());
    assert_eq!(decode(&r.answer(&Query::new("example.com", A).bytes())).rcode, NOERROR);
}

#[test]
fn the_host_machine_resolves_only_when_a_localhost_rule_lets_it() {
    let s = setup(Preset::AllowAll, &[]);
    assert_eq!(s.ask(&Query::new("host.moat.internal", A)).rcode, NXDOMAIN);
    s.policy.update(Preset::AllowAll, &["allow network localhost:8080".parse().unwrap()]);
    let ip = s.ask(&Query::new("host.moat.internal", A)).a().expect("an address once allowed");
    assert_eq!(s.fake.lookup_ip(ip).as_deref(), Some("host.moat.internal"));
    assert_eq!(s.ask(&Query::new("other.moat.internal", A)).rcode, NXDOMAIN, "no other Moat names");
}
