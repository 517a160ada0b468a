use std::net::IpAddr;

use super::super::{classify, AddressClass, Preset, Reason};
use super::{decide, policy, rule_of, rules};
use AddressClass::*;

fn class(ip: &str) -> AddressClass {
    classify(ip.parse::<IpAddr>().unwrap())
}

#[test]
fn ipv4_classes() {
    for (ip, expected) in [
        ("8.8.8.8", Public),
        ("1.1.1.1", Public),
        ("0.0.0.0", Unspecified),
        ("0.1.2.3", Unspecified),
        ("127.0.0.1", Loopback),
        ("127.255.0.9", Loopback),
        ("10.0.0.1", Private),
        ("172.16.0.1", Private),
        ("172.31.255.255", Private),
        ("172.32.0.1", Public),
        ("192.168.1.1", Private),
        ("100.64.0.1", SharedAddressSpace),
        ("100.127.255.255", SharedAddressSpace),
        ("100.128.0.1", Public),
        ("169.254.1.1", LinkLocal),
        ("169.254.169.254", CloudMetadata),
        ("224.0.0.1", Multicast),
        ("239.255.255.250", Multicast),
        ("255.255.255.255", Broadcast),
        ("192.0.2.1", Documentation),
        ("198.51.100.7", Documentation),
        ("203.0.113.9", Documentation),
        ("240.0.0.1", Reserved),
        ("198.18.0.1", Reserved),
        ("192.0.0.8", Reserved),
    ] {
        assert_eq!(class(ip), expected, "{ip}");
    }
}

#[test]
fn ipv6_classes() {
    for (ip, expected) in [
        ("2606:4700::1111", Public),
        ("::", Unspecified),
        ("::1", Loopback),
        ("fe80::1", LinkLocal),
        ("febf::1", LinkLocal),
        ("fd00:ec2::254", CloudMetadata),
        ("fd00::1", UniqueLocal),
        ("fc00::1", UniqueLocal),
        ("ff02::1", Multicast),
        ("2001:db8::1", Documentation),
        ("3fff::1", Documentation),
        ("fec0::1", Reserved),
        ("100::1", Reserved),
        ("2001:2::1", Reserved),
    ] {
        assert_eq!(class(ip), expected, "{ip}");
    }
}

#[test]
fn embedded_ipv4_forms_take_the_embedded_class() {
    // 127.0.0.1 = 7f00:0001, 10.0.0.1 = 0a00:0001, 169.254.169.254 = a9fe:a9fe.
    for (ip, expected) in [
        ("::ffff:127.0.0.1", Loopback),
        ("::ffff:10.0.0.1", Private),
        ("::ffff:169.254.169.254", CloudMetadata),
        ("::ffff:8.8.8.8", Public),
        ("::ffff:0:127.0.0.1", Loopback),
        ("::127.0.0.1", Loopback),
        ("::10.0.0.1", Private),
        ("::169.254.169.254", CloudMetadata),
        ("::8.8.8.8", Reserved),
        ("64:ff9b::7f00:1", Loopback),
        ("64:ff9b::a00:1", Private),
        ("64:ff9b::a9fe:a9fe", CloudMetadata),
        ("64:ff9b::808:808", Public),
        ("64:ff9b:1::7f00:1", Loopback),
        ("64:ff9b:1::a9fe:a9fe", CloudMetadata),
        // RFC 6052 /48 layout: v4 in bytes 6-7 and 9-10.
        ("64:ff9b:1:a00:0:100::", Private),
        // /64 layout: v4 in bytes 9-12.
        ("64:ff9b:1:0:a9:fea9:fe00:0", CloudMetadata),
        ("64:ff9b:1::808:808", Public),
        // 8.8.8.8 in the /48 layout; the /96 reading (0.0.0.0) is padding.
        ("64:ff9b:1:808:8:800::", Public),
        ("64:ff9b:1::", Unspecified),
        ("2002:7f00:1::1", Loopback),
        ("2002:a00:1::", Private),
        ("2002:a9fe:a9fe::1", CloudMetadata),
        ("2002:808:808::1", Public),
        // Teredo stores the client inverted: !127.0.0.1 = 80ff:fffe.
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", Loopback),
    ] {
        assert_eq!(class(ip), expected, "{ip}");
    }
}

#[test]
fn special_literals_are_refused_even_under_allow_all() {
    let p = policy(Preset::AllowAll, "");
    for ip in [
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "[::1]",
        "::ffff:127.0.0.1",
        "[::ffff:10.0.0.1]",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::7f00:1",
        "2002:a00:1::",
        "[fd00:ec2::254]",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "0.0.0.0",
    ] {
        let d = decide(&p, "s", ip, 443);
        assert!(matches!(d.reason, Reason::SpecialAddress(..)), "{ip}: {d}");
    }
    assert_eq!(rule_of(&decide(&p, "s", "8.8.8.8", 443)), "allow network **");
}

#[test]
fn rebinding_is_blocked_after_resolution() {
    let p = policy(Preset::Balanced, "allow network **.example.com\nallow network intranet.corp");
    let req = super::Request::new("s", "evil.example.com", 443);
    assert!(p.decide(&req).is_allowed());
    for ip in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:a9fe:a9fe::"] {
        let d = p.decide_address(&req, ip.parse().unwrap());
        assert!(!d.is_allowed(), "{ip}: {d}");
        assert!(d.to_string().contains("only a rule naming the host or address exactly"), "{d}");
    }
    assert_eq!(p.decide_address(&req, "93.184.216.34".parse().unwrap()).reason, Reason::PublicAddress);
    // An exact host rule names the host, so its private address is reachable.
    let corp = super::Request::new("s", "intranet.corp", 443);
    assert_eq!(rule_of(&p.decide_address(&corp, "10.1.2.3".parse().unwrap())), "allow network intranet.corp");
}

#[test]
fn explicit_rules_reenable_special_addresses() {
    let p = policy(
        Preset::AllowAll,
        "allow network localhost:8080\nallow network 10.0.0.5\nallow network [fd00::/8]:5432\nallow network 100.64.0.0/10:22",
    );
    assert_eq!(rule_of(&decide(&p, "s", "localhost", 8080)), "allow network localhost:8080");
    assert_eq!(rule_of(&decide(&p, "s", "127.0.0.1", 8080)), "allow network localhost:8080");
    assert_eq!(rule_of(&decide(&p, "s", "[::1]", 8080)), "allow network localhost:8080");
    assert!(!decide(&p, "s", "127.0.0.1", 8081).is_allowed());
    let local = super::Request::new("s", "localhost", 8080);
    assert!(p.decide_address(&local, "127.0.0.1".parse().unwrap()).is_allowed());
    assert!(p.decide_address(&local, "::1".parse().unwrap()).is_allowed());
    assert_eq!(rule_of(&decide(&p, "s", "10.0.0.5", 5432)), "allow network 10.0.0.5");
    assert_eq!(rule_of(&decide(&p, "s", "::ffff:10.0.0.5", 22)), "allow network 10.0.0.5");
    assert!(!decide(&p, "s", "10.0.0.6", 443).is_allowed());
    assert!(decide(&p, "s", "fd12::1", 5432).is_allowed());
    assert!(!decide(&p, "s", "fd12::1", 443).is_allowed());
    assert!(decide(&p, "s", "100.100.1.1", 22).is_allowed());
    // Through a wildcard-allowed name, an IP rule still names the address.
    let via_name = super::Request::new("s", "db.example.com", 5432);
    assert!(p.decide_address(&via_name, "fd00::9".parse().unwrap()).is_allowed());
}

#[test]
fn wildcards_never_reenable_special_addresses() {
    let p = policy(Preset::DenyAll, "allow network **\nallow network *.corp:*\nallow network **.lan");
    assert!(!decide(&p, "s", "10.0.0.1", 443).is_allowed());
    let req = super::Request::new("s", "db.corp", 5432);
    assert!(p.decide(&req).is_allowed());
    assert!(!p.decide_address(&req, "10.0.0.1".parse().unwrap()).is_allowed());
    let req = super::Request::new("s", "nas.lan", 443);
    assert!(!p.decide_address(&req, "192.168.1.2".parse().unwrap()).is_allowed());
}

#[test]
fn address_deny_rules_apply_after_resolution() {
    let p = policy(Preset::AllowAll, "deny network 203.0.114.0/24\ndeny network 2001:4860::/32");
    let req = super::Request::new("s", "example.com", 443);
    let d = p.decide_address(&req, "203.0.114.9".parse().unwrap());
    assert_eq!(rule_of(&d), "deny network 203.0.114.0/24");
    assert!(!p.decide_address(&req, "2001:4860::8888".parse().unwrap()).is_allowed());
    assert!(p.decide_address(&req, "203.0.115.9".parse().unwrap()).is_allowed());
}

#[test]
fn a_preset_name_that_resolves_to_a_special_address_is_refused_unless_a_user_rule_names_it() {
    // github.com is in `balanced`; an override (or a poisoned resolver) points it at the host.
    let req = super::Request::new("s", "github.com", 443);
    let p = policy(Preset::Balanced, "");
    assert!(p.decide(&req).is_allowed());
    for ip in ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:192.168.0.1", "100.64.0.9"] {
        let d = p.decide_address(&req, ip.parse().unwrap());
        assert!(matches!(d.reason, Reason::SpecialAddress(..)), "{ip}: {d}");
    }
    // The agent hosts a template adds are the preset's too.
    let ext =
        super::super::Policy::extended(Preset::Balanced, rules("allow network api.githubcopilot.com --sandbox s"), &[]);
    let cp = super::Request::new("s", "api.githubcopilot.com", 443);
    assert!(!ext.snapshot().decide_address(&cp, "127.0.0.1".parse().unwrap()).is_allowed());
    // The user's own rule naming the host opens it.
    let p = policy(Preset::Balanced, "allow network github.com");
    assert_eq!(rule_of(&p.decide_address(&req, "127.0.0.1".parse().unwrap())), "allow network github.com");
}

#[test]
fn this_host_is_never_reached_and_no_rule_may_name_it() {
    let p = policy(Preset::AllowAll, "allow network 0.0.0.0/0\nallow network localhost:*\nallow network thishost.test");
    let req = super::Request::new("s", "thishost.test", 443);
    for ip in ["0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0"] {
        assert!(!decide(&p, "s", ip, 443).is_allowed(), "{ip}");
        assert!(!p.decide_address(&req, ip.parse().unwrap()).is_allowed(), "{ip} via a name the user allowed");
    }
    for text in ["0.0.0.0", "0.0.0.0:80", "0.0.0.0/8", "0.9.0.0/16", "::", "[::]:443", "::/128"] {
        let err = text.parse::<super::super::Resource>().unwrap_err();
        assert!(err.to_string().contains("this host"), "{text}: {err}");
    }
    assert!("0.0.0.0/0".parse::<super::super::Resource>().is_ok(), "all of IPv4 is another matter");
}

#[test]
fn every_spelling_of_a_special_address_is_refused_under_allow_all() {
    let p = policy(Preset::AllowAll, "");
    // Literals the proxy parses itself, in every form it accepts.
    for host in ["127.0.0.1.", "[::FFFF:127.0.0.1]", "[0:0:0:0:0:0:0:1]", "[::127.0.0.1]", "[64:FF9B::7F00:1]"] {
        let d = decide(&p, "s", host, 443);
        assert!(!d.is_allowed(), "{host}: {d}");
    }
    // Spellings that are names to the policy (`**` allows them) and addresses to a
    // resolver (inet_aton reads decimal, hex, octal and short forms): what they
    // resolve to is checked before connecting.
    for (host, resolved) in [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7F.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("LOCALHOST.", "127.0.0.1"),
        ("169.254.169.254.", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("0", "0.0.0.0"),
    ] {
        let req = super::Request::new("s", host, 443);
        let by_name = p.decide(&req);
        let allowed = by_name.is_allowed() && p.decide_address(&req, resolved.parse().unwrap()).is_allowed();
        assert!(!allowed, "{host} -> {resolved}: {by_name}");
    }
}

#[test]
fn a_network_that_merely_covers_loopback_or_metadata_does_not_open_it() {
    let req = super::Request::new("s", "svc.test", 443);
    let at = |p: &super::super::CompiledPolicy, ip: &str| p.decide_address(&req, ip.parse().unwrap()).is_allowed();
    let everything = policy(Preset::AllowAll, "allow network 0.0.0.0/0:*\nallow network [::/0]:*");
    for ip in ["127.0.0.1", "169.254.169.254", "10.0.0.1", "::1", "fd00:ec2::254", "::ffff:127.0.0.1"] {
        assert!(!at(&everything, ip), "{ip} opened by a rule for the whole address space");
        assert!(!decide(&everything, "s", ip, 443).is_allowed(), "{ip} as a literal");
    }
    assert!(at(&everything, "8.8.8.8"), "public addresses are unaffected");
    // The link-local network opens link-local hosts, not the metadata service inside it.
    let link_local = policy(Preset::DenyAll, "allow network 169.254.0.0/16:*");
    assert!(at(&link_local, "169.254.1.1"));
    assert!(!at(&link_local, "169.254.169.254"));
    assert!(!at(&policy(Preset::DenyAll, "allow network 169.254.169.254:80"), "169.254.169.254"), "port 443");
    assert!(at(&policy(Preset::DenyAll, "allow network 169.254.169.254:443"), "169.254.169.254"));
    // A network inside one kind of space names it; one straddling public space does not.
    assert!(at(&policy(Preset::DenyAll, "allow network 127.0.0.0/8:*"), "127.0.0.9"));
    assert!(at(&policy(Preset::DenyAll, "allow network 10.1.0.0/16:*"), "10.1.2.3"));
    assert!(!at(&policy(Preset::DenyAll, "allow network 8.0.0.0/5:*"), "10.1.2.3"));
    assert!(!at(&policy(Preset::DenyAll, "allow network 172.0.0.0/8:*"), "172.16.0.1"));
    assert!(at(&policy(Preset::DenyAll, "allow network [fc00::/7]:*"), "fd12::1"));
    // Naming the host still works, whatever it resolves to.
    assert!(at(&policy(Preset::DenyAll, "allow network svc.test"), "127.0.0.1"));
}

#[test]
fn a_new_address_rule_reaching_special_addresses_must_name_its_ports() {
    let check = |text: &str| text.parse::<super::super::Rule>().unwrap().check_new().map_err(|e| e.to_string());
    for text in [
        "allow network 10.0.0.0/8",
        "allow network 127.0.0.2",
        "allow network 192.168.1.0/24",
        "allow network 169.254.169.254",
        "allow network 8.0.0.0/5",
        "allow network 0.0.0.0/0",
        "allow network fd00::/8",
        "allow network ::/0",
        "allow network 10.0.0.0/8 --sandbox web",
    ] {
        let err = check(text).expect_err(text);
        assert!(err.contains("every port") && err.contains(":5432") && err.contains(":*"), "{text}: {err}");
    }
    let err = check("allow network fd00::/8").unwrap_err();
    assert!(err.contains("[fd00::/8]:*"), "IPv6 in brackets: {err}");
    for text in [
        "allow network 10.0.0.0/8:5432",
        "allow network 10.0.0.0/8:*",
        "allow network 8.8.8.8",
        "allow network 203.0.114.0/24",
        "deny network 10.0.0.0/8",
        "allow network localhost:8080",
        "allow network **",
    ] {
        assert_eq!(check(text), Ok(()), "{text}");
    }
}
