//! `moat template …`: parses, calls the daemon, renders.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use moat_sandbox_core::paths::Home;
use moat_sandbox_core::templates::{parse_launch, ImportRequest, ProgramsRequest, SaveRequest, TemplateInfo};

use crate::args::TemplateCommand;
use crate::commands::{client, each};

pub fn run(home: &Home, cmd: TemplateCommand) -> Result<i32> {
    let c = client(home)?;
    match cmd {
        TemplateCommand::Ls { json } => {
            let list = c.templates()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_table(&list);
            }
        }
        TemplateCommand::Save { stop, force, description, sandbox, name } => {
            let started = Instant::now();
            let req = SaveRequest { sandbox: sandbox.clone(), name, description, stop, force };
            let t = c.save_template(&req)?;
            println!(
                "saved {sandbox}'s disk as template {} ({}, {:.1} s); start from it with `moat run -t {} PATH`",
                t.name,
                size(t.size_bytes.unwrap_or(0)),
                started.elapsed().as_secs_f64(),
                t.name
            );
        }
        TemplateCommand::Rm { names } => return each(&names, |n| Ok(c.remove_template(n)?)),
        TemplateCommand::Export { name, file } => {
            let started = Instant::now();
            let e = c.export_template(&name, &absolute(&file)?)?;
            println!(
                "exported template {} to {} ({}, {:.1} s)",
                e.name,
                e.file.display(),
                size(e.bytes),
                started.elapsed().as_secs_f64()
            );
        }
        TemplateCommand::Import { name, force, other_base, file } => {
            let started = Instant::now();
            let req = ImportRequest { file: absolute(&file)?, name, force, other_base };
            let t = c.import_template(&req)?;
            println!(
                "imported template {} ({} over {}, {}, {:.1} s)",
                t.name,
                plural(t.layers, "layer"),
                t.agent,
                size(t.size_bytes.unwrap_or(0)),
                started.elapsed().as_secs_f64()
            );
        }
        TemplateCommand::Programs { launch, batch, from, description, force, name, programs } => {
            let programs = programs.iter().map(|p| absolute(p)).collect::<Result<Vec<_>>>()?;
            let launch = launch.map(|l| parse_launch(&l));
            let req = ProgramsRequest { name, programs, launch, batch, from: Some(from), description, force };
            let t = c.programs_template(&req)?;
            let argv = t.launch.as_ref().map(|l| l.argv.join(" ")).unwrap_or_default();
            println!(
                "made template {} ({} over {}); `moat run -t {} PATH` starts `{argv}`",
                t.name,
                size(t.size_bytes.unwrap_or(0)),
                t.agent,
                t.name
            );
        }
    }
    Ok(0)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(std::env::current_dir().context("cannot read the current folder")?.join(p))
}

fn print_table(list: &[TemplateInfo]) {
    let dash = || "-".to_string();
    let rows: Vec<[String; 7]> = list
        .iter()
        .map(|t| {
            let images = match (t.built, t.same_base) {
                (_, Some(false)) => "other base",
                (true, _) => "built",
                (false, _) => "not built",
            };
            [
                t.name.clone(),
                if t.builtin { "moat".into() } else { t.agent.clone() },
                images.into(),
                t.size_bytes.map(size).unwrap_or_else(dash),
                t.parent.clone().unwrap_or_else(dash),
                t.created_at.map(utc).unwrap_or_else(dash),
                moat_text::escape_str(&t.description),
            ]
        })
        .collect();
    let header = ["TEMPLATE", "AGENT", "IMAGES", "SIZE", "PARENT", "CREATED (UTC)", "DESCRIPTION"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// `YYYY-MM-DD HH:MM` in UTC.
fn utc(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", rest / 3600, rest % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sizes_and_counts_read_well() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_735_689_600), "2025-01-01 00:00");
        assert_eq!(utc(1_709_210_096), "2024-02-29 12:34");
        assert_eq!(size(5 << 20), "5.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(plural(1, "layer"), "1 layer");
        assert_eq!(plural(2, "layer"), "2 layers");
    }
}
