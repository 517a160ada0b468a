//! `moat policy …`: the network policy and the connection log from the command line.
//!
//! Edits go straight to the policy database; every running sandbox's proxy
//! notices the change within a fraction of a second (no restart).

use moat_text::escape_str;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use moat_netproxy::log::{ConnectionRecord, Filter, LogReader, LogVerdict};
use moat_netproxy::policy::{Action, Preset, Rule, Scope};
use moat_sandbox_core::egress::PolicyStore;
use moat_sandbox_core::paths::Home;

use crate::args::{PolicyCommand, RuleArgs};

pub fn run(home: &Home, cmd: PolicyCommand) -> Result<i32> {
    home.ensure_private()?;
    let mut store = PolicyStore::open(&home.policy_database())?;
    match cmd {
        PolicyCommand::Allow(a) => add(&mut store, Action::Allow, a)?,
        PolicyCommand::Deny(a) => add(&mut store, Action::Deny, a)?,
        PolicyCommand::Ls { json, all } => ls(&store, json, all)?,
        PolicyCommand::Rm { rule, sandbox } => rm(&mut store, &rule, sandbox)?,
        PolicyCommand::Preset { name: None } => {
            let chosen = store.preset()?;
            let preset = chosen.unwrap_or_default();
            let note = if chosen.is_none() { " (not chosen yet; the default)" } else { "" };
            println!("{preset}{note}");
        }
        PolicyCommand::Preset { name: Some(name) } => {
            let preset: Preset = name.parse()?;
            store.set_preset(preset)?;
            println!("preset: {preset} (user rules kept; running sandboxes follow at once)");
        }
        PolicyCommand::Reset { preset, yes } => {
            let interactive = std::io::stdin().is_terminal();
            if !yes && interactive && !confirm("Delete every user rule and choose the preset again?")? {
                bail!("nothing changed");
            }
            let preset = match preset {
                Some(p) => p.parse()?,
                None if interactive => ask_preset()?,
                None => Preset::default(),
            };
            let n = store.reset(preset)?;
            println!("removed {n} rule(s); preset: {preset}");
        }
        PolicyCommand::Log { name, json, limit, follow, denied } => {
            log(home, name.as_deref(), json, limit, follow, denied)?;
        }
    }
    Ok(0)
}

/// Before the first sandbox starts: asks which preset to use (on a terminal)
/// or takes `balanced` and says so. Does nothing once a preset is chosen.
pub fn ensure_preset_chosen(home: &Home) -> Result<()> {
    home.ensure_private()?;
    let store = PolicyStore::open(&home.policy_database())?;
    if store.preset()?.is_some() {
        return Ok(());
    }
    let preset = if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        ask_preset()?
    } else {
        eprintln!(
            "moat: network policy: using the `balanced` preset (AI APIs, package registries, code hosting); \
             change it with `moat policy preset allow-all|balanced|deny-all`"
        );
        Preset::Balanced
    };
    store.set_preset(preset)?;
    Ok(())
}

fn ask_preset() -> Result<Preset> {
    let mut err = std::io::stderr();
    writeln!(err, "What may sandboxes reach on the network? (change it later with `moat policy preset`)")?;
    writeln!(err, "  1) balanced   AI APIs, package registries, code hosting, OS packages [default]")?;
    writeln!(err, "  2) allow-all  everything except your machine and private networks")?;
    writeln!(err, "  3) deny-all   nothing until you allow it")?;
    loop {
        write!(err, "choice [1]: ")?;
        err.flush()?;
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line)? == 0 {
            return Ok(Preset::Balanced);
        }
        match line.trim() {
            "" | "1" | "balanced" => return Ok(Preset::Balanced),
            "2" | "allow-all" => return Ok(Preset::AllowAll),
            "3" | "deny-all" => return Ok(Preset::DenyAll),
            other => writeln!(err, "{other:?} is not 1, 2 or 3")?,
        }
    }
}

fn confirm(question: &str) -> Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn scope(global: bool, sandbox: Option<String>) -> Scope {
    match sandbox {
        Some(name) if !global => Scope::Sandbox(name),
        _ => Scope::Global,
    }
}

fn add(store: &mut PolicyStore, action: Action, a: RuleArgs) -> Result<()> {
    let scope = scope(a.global, a.sandbox);
    let rules = match (a.kind.as_str(), a.what.as_slice()) {
        ("network", [resources]) => Rule::parse_list(action, &scope, resources)?,
        ("request", [methods, targets]) => Rule::parse_requests(action, &scope, methods, targets)?,
        ("network", _) => bail!("give one comma-separated list: `moat policy {action} network github.com,*.npmjs.org`"),
        _ => bail!("give the methods, then the hosts: `moat policy {action} request DELETE api.github.com/**`"),
    };
    for stored in store.add(&rules)? {
        println!("{:>4}  {}", stored.id, stored.rule);
    }
    Ok(())
}

fn rm(store: &mut PolicyStore, words: &[String], sandbox: Option<String>) -> Result<()> {
    if words.iter().all(|w| w.parse::<i64>().is_ok()) {
        for id in words {
            let id: i64 = id.parse()?;
            if !store.remove_id(id)? {
                bail!("no rule {id}; see `moat policy ls`");
            }
            println!("removed rule {id}");
        }
        return Ok(());
    }
    let mut text = words.join(" ");
    if let Some(name) = &sandbox {
        text.push_str(&format!(" --sandbox {name}"));
    }
    let rule: Rule = text.parse().with_context(|| "give rule ids or `allow|deny network RESOURCE`")?;
    let rules = match rule.resource.kind() {
        "request" => vec![rule.clone()],
        _ => Rule::parse_list(rule.action, &rule.scope, &words[2..].join(" "))?,
    };
    let n = store.remove(&rules)?;
    if n == 0 {
        bail!("no such rule: {rule}; see `moat policy ls`");
    }
    println!("removed {n} rule(s)");
    Ok(())
}

fn ls(store: &PolicyStore, json: bool, all: bool) -> Result<()> {
    let chosen = store.preset()?;
    let preset = chosen.unwrap_or_default();
    let rules = store.rules()?;
    if json {
        let user: Vec<_> = rules
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id, "rule": s.rule.to_string(), "action": s.rule.action, "kind": s.rule.resource.kind(),
                    "scope": s.rule.scope, "resource": s.rule.resource.to_string(), "created_at": s.created_at,
                })
            })
            .collect();
        let preset_rules: Vec<_> = if all {
            preset.rules().iter().map(|(r, cat)| serde_json::json!({"rule": r.to_string(), "category": cat})).collect()
        } else {
            Vec::new()
        };
        let doc = serde_json::json!({"preset": preset, "preset_chosen": chosen.is_some(), "rules": user, "preset_rules": preset_rules});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("preset: {preset}{}", if chosen.is_none() { " (default, not chosen yet)" } else { "" });
    if rules.is_empty() {
        println!("no user rules; add one with `moat policy allow network HOST`");
    } else {
        println!("{:>4}  RULE", "ID");
        for s in &rules {
            println!("{:>4}  {}", s.id, s.rule);
        }
    }
    if all {
        for (rule, category) in preset.rules() {
            println!("   -  {rule}  ({preset}: {category})");
        }
    }
    Ok(())
}

fn log(home: &Home, name: Option<&str>, json: bool, limit: usize, follow: bool, denied: bool) -> Result<()> {
    let path = home.connection_log();
    if !path.exists() {
        if !follow {
            println!("no connections logged yet");
            return Ok(());
        }
        while !path.exists() {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let reader = LogReader::open(&path)?;
    let verdict = denied.then_some(LogVerdict::Denied);
    let (rows, mut follower) = reader.follow(&Filter { sandbox: name, after_id: None, limit, verdict })?;
    if !json {
        println!(
            "{:<19} {:<16} {:<7} {:>3} {:<8} {:<40} {:>6} {:>9} {:>9}  RULE",
            "TIME", "SANDBOX", "VERDICT", "ST", "METHOD", "HOST/PATH", "PORT", "UP", "DOWN"
        );
    }
    for (_, rec) in &rows {
        print_record(rec, json)?;
    }
    let dropped = reader.dropped(name)?;
    if dropped > 0 {
        eprintln!("moat: {dropped} record(s) could not be logged (the log was busy); the rest is complete");
    }
    if !follow {
        return Ok(());
    }
    loop {
        let fresh = follower.poll(&reader)?;
        for (_, rec) in &fresh {
            print_record(rec, json)?;
        }
        if fresh.len() < moat_netproxy::log::POLL_LIMIT {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn print_record(rec: &ConnectionRecord, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", json_safe(&serde_json::to_string(rec)?))?;
    } else {
        let verdict = match rec.verdict {
            LogVerdict::Allowed => "allowed",
            LogVerdict::Denied => "DENIED",
            LogVerdict::Failed => "failed",
        };
        let mut why = rec.rule.clone().unwrap_or_default();
        if let Some(note) = &rec.note {
            why = if why.is_empty() { note.clone() } else { format!("{why}; {note}") };
        }
        let status = rec.status.map_or_else(|| "-".to_string(), |s| s.to_string());
        let target = format!("{}{}", rec.host, rec.path.as_deref().unwrap_or_default());
        writeln!(
            out,
            "{:<19} {:<16} {:<7} {:>3} {:<8} {:<40} {:>6} {:>9} {:>9}  {}",
            format_time(rec.started_ms),
            escape_str(&rec.sandbox),
            verdict,
            status,
            escape_str(&rec.method),
            escape_str(&target),
            rec.port,
            rec.bytes_up,
            rec.bytes_down,
            escape_str(&why)
        )?;
    }
    out.flush()?;
    Ok(())
}

/// JSON text with the characters `moat_text` escapes (serde_json leaves C1
/// controls and bidirectional overrides raw) written as `\uXXXX`: still the
/// same JSON, safe on a terminal.
fn json_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if moat_text::escape_str(c.encode_utf8(&mut [0; 4])).len() > c.len_utf8() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, without a date library.
fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_795_766_400_000), "2026-11-27 08:00:00");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00");
    }
}
