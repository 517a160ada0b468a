use super::super::{
    parse_resources, HostPattern, NameProblem, Ports, Preset, Resource, ResourceProblem, Rule, RuleError,
};

fn problem(input: &str) -> ResourceProblem {
    input.parse::<Resource>().expect_err(input).problem
}

#[test]
fn names_are_normalized() {
    let r: Resource = "GitHub.COM.".parse().unwrap();
    assert_eq!(r.to_string(), "github.com");
    let r: Resource = "**.Example.com".parse().unwrap();
    assert_eq!(r, Resource::Host { pattern: HostPattern::AnyDepth("example.com".into()), ports: Ports::Default });
}

#[test]
fn space_in_name_says_what_and_shows_forms() {
    let err = "exa mple.com".parse::<Resource>().unwrap_err();
    assert_eq!(err.problem, ResourceProblem::Name(NameProblem::BadChar(' ')));
    let msg = err.to_string();
    assert!(msg.contains("\"exa mple.com\""), "{msg}");
    assert!(msg.contains("cannot contain spaces"), "{msg}");
    assert!(msg.contains("valid forms: example.com, *.example.com"), "{msg}");
}

#[test]
fn bad_names_are_rejected() {
    let long_label = format!("{}.com", "a".repeat(64));
    let long_name = format!("{}com", "abcdefghi.".repeat(26));
    let cases: &[(&str, NameProblem)] = &[
        ("bücher.de", NameProblem::NonAscii),
        ("a..com", NameProblem::EmptyLabel),
        (".a.com", NameProblem::EmptyLabel),
        (&long_label, NameProblem::LabelTooLong),
        (&long_name, NameProblem::NameTooLong),
        ("-a.com", NameProblem::HyphenAtEdge),
        ("a-.com", NameProblem::HyphenAtEdge),
        ("a.*.com", NameProblem::MisplacedWildcard),
        ("a.**.com", NameProblem::MisplacedWildcard),
        ("*a.com", NameProblem::MisplacedWildcard),
        ("***.com", NameProblem::MisplacedWildcard),
        ("*", NameProblem::BareStar),
        ("*.", NameProblem::DanglingWildcard),
        ("**.", NameProblem::DanglingWildcard),
        ("**.:443", NameProblem::DanglingWildcard),
        ("", NameProblem::Empty),
        ("10.0.0.256", NameProblem::NotAnAddress),
        ("1.2.3", NameProblem::NotAnAddress),
        ("a/b", NameProblem::BadChar('/')),
        ("a$b.com", NameProblem::BadChar('$')),
    ];
    for (input, expected) in cases {
        let got = match input.parse::<Resource>() {
            Err(e) => e.problem,
            Ok(r) => panic!("{input:?} parsed as {r}"),
        };
        let ok =
            got == ResourceProblem::Name(expected.clone()) || (*input == "a/b" && got == ResourceProblem::BadAddress);
        assert!(ok, "{input:?}: {got:?}, expected {expected:?}");
    }
    assert!("x.xn--bcher-kva.de".parse::<Resource>().is_ok());
    assert!(format!("{}.com", "a".repeat(63)).parse::<Resource>().is_ok());
}

#[test]
fn ports_and_addresses() {
    assert_eq!(problem("example.com:0"), ResourceProblem::BadPort("0".into()));
    assert_eq!(problem("example.com:65536"), ResourceProblem::BadPort("65536".into()));
    assert_eq!(problem("example.com:+80"), ResourceProblem::BadPort("+80".into()));
    assert_eq!(problem("example.com:"), ResourceProblem::BadPort("".into()));
    assert_eq!(problem("10.0.0.0/33"), ResourceProblem::BadAddress);
    assert_eq!(problem("[::1"), ResourceProblem::BadAddress);
    assert_eq!(problem("[::1]443"), ResourceProblem::BadAddress);
    assert_eq!(problem("[example.com]:443"), ResourceProblem::BadAddress);
    assert_eq!(problem("::1:*"), ResourceProblem::UnbracketedIpv6Port);
    let ResourceProblem::HostBitsSet(fixed) = problem("10.0.0.1/8") else { panic!() };
    assert_eq!(fixed.to_string(), "10.0.0.0/8");
    let msg = "10.0.0.1/8".parse::<Resource>().unwrap_err().to_string();
    assert!(msg.contains("did you mean 10.0.0.0/8?"), "{msg}");
    assert_eq!("10.0.0.5/32".parse::<Resource>().unwrap().to_string(), "10.0.0.5");
    assert_eq!("::ffff:10.0.0.5".parse::<Resource>().unwrap().to_string(), "10.0.0.5");
    assert_eq!("[::ffff:10.0.0.0/104]:22".parse::<Resource>().unwrap().to_string(), "10.0.0.0/8:22");
    assert_eq!("[::1]".parse::<Resource>().unwrap().to_string(), "::1");
}

#[test]
fn lists_and_rule_text() {
    let list = parse_resources("github.com,*.npmjs.org, 10.0.0.0/8").unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(parse_resources("github.com,,x.com").unwrap_err().problem, ResourceProblem::Name(NameProblem::Empty));
    assert!(matches!("allow github.com".parse::<Rule>(), Err(RuleError::Syntax(_))));
    assert!(matches!("permit network a.com".parse::<Rule>(), Err(RuleError::Syntax(_))));
    assert!(matches!("allow network a.com --sandbox".parse::<Rule>(), Err(RuleError::Syntax(_))));
    assert!(matches!("allow network a..com".parse::<Rule>(), Err(RuleError::Resource(_))));
}

#[test]
fn presets_parse_and_are_tight() {
    assert_eq!("balanced".parse::<Preset>().unwrap(), Preset::Balanced);
    let err = "lax".parse::<Preset>().unwrap_err().to_string();
    assert_eq!(err, "unknown preset \"lax\": choose allow-all, balanced or deny-all");
    let balanced = Preset::Balanced.rules();
    assert!(balanced.len() > 50);
    for (rule, category) in &balanced {
        assert_ne!(*category, "uncategorized");
        match &rule.resource {
            Resource::Host { pattern: HostPattern::Exact(_), .. } => {}
            other => panic!("balanced preset entry {other} is not an exact host"),
        }
    }
    assert!(Preset::DenyAll.rules().is_empty());
    assert_eq!(Preset::AllowAll.rules()[0].0.to_string(), "allow network **");
}
