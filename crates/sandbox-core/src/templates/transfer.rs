//! Export and import: a template as one zstd-compressed tar file holding
//! `manifest.json` and its user layers (`layer-<i>.ext4`, sparse), readable
//! with `tar --zstd -tvf`. The shipped template's images are not in it: the
//! manifest names that template and its images' recipe hashes.
//!
//! An import is hostile input. It is read twice through the same checks:
//! first only listed (every header, every size, the manifest parsed and
//! checked, nothing written), then extracted into a fresh staging folder,
//! where only Moat creates files — regular files of the expected names.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::error::TemplateError;
use super::manifest::{layer_file, Manifest, MAX_MANIFEST_BYTES};
use super::sparse::{self, SparseWriter};
use super::tar::{ArchiveError, Member, TarReader, TarWriter};

/// What an export holds, as its listing found it.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    /// The checked manifest.
    pub manifest: Manifest,
    /// Its layer members, in order.
    pub layers: Vec<Member>,
}

impl Listing {
    /// Bytes the layers' data take once extracted.
    pub fn data_bytes(&self) -> u64 {
        self.layers.iter().map(Member::stored).sum()
    }
}

/// Writes `manifest` and the layer files in `dir` to a new `file` (never over
/// an existing one); returns its size.
pub(crate) fn export(manifest: &Manifest, dir: &Path, file: &Path) -> Result<u64, TemplateError> {
    if file.exists() {
        return Err(TemplateError::Io {
            what: "export over",
            path: file.to_path_buf(),
            source: std::io::ErrorKind::AlreadyExists.into(),
        });
    }
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let partial = file.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let written = (|| {
        let mut zstd = spawn_zstd(&["-q", "-T0", "-3", "-f", "-o"], &partial)?;
        let stdin = zstd.stdin.take().expect("piped stdin");
        let wrote = write_tar(manifest, dir, BufWriter::with_capacity(1 << 20, stdin));
        let status = finish(zstd)?;
        wrote.map_err(TemplateError::io("write the export", &partial))?;
        status.map_err(TemplateError::Zstd)?;
        // A hard link never replaces a file that appeared meanwhile.
        std::fs::hard_link(&partial, file).map_err(TemplateError::io("write", file))?;
        std::fs::metadata(file).map(|m| m.len()).map_err(TemplateError::io("read", file))
    })();
    let _ = std::fs::remove_file(&partial);
    written
}

fn write_tar(manifest: &Manifest, dir: &Path, out: impl std::io::Write) -> std::io::Result<()> {
    let mut tar = TarWriter::new(out);
    tar.regular("manifest.json", &manifest.encode(), manifest.created_at)?;
    for (i, layer) in manifest.layers.iter().enumerate() {
        let f = File::open(dir.join(layer_file(i)))?;
        let size = f.metadata()?.len();
        let regions = sparse::data_regions(&f)?;
        tar.sparse(&layer_file(i), size, &regions, layer.created_at, &mut |at, buf| f.read_exact_at(buf, at))?;
    }
    tar.finish()?;
    Ok(())
}

/// Lists `file` with every check and writes nothing.
pub(crate) fn list(file: &Path) -> Result<Listing, TemplateError> {
    read(file, None)
}

/// Extracts `file` (checked again on the way) into the empty folder `into`:
/// `layer-<i>.ext4` files only, holes kept. The manifest is left to the caller.
pub(crate) fn extract(file: &Path, into: &Path) -> Result<Listing, TemplateError> {
    read(file, Some(into))
}

fn read(file: &Path, into: Option<&Path>) -> Result<Listing, TemplateError> {
    let refused = |source| TemplateError::Archive { file: file.to_path_buf(), source };
    let input = File::open(file).map_err(TemplateError::io("open", file))?;
    let mut zstd = spawn_zstd_reader(input)?;
    let stdout = zstd.stdout.take().expect("piped stdout");
    // The pipe closes when `walk` returns: zstd ends (if it has not already)
    // at its next write. What it said matters only when the stream broke
    // off: then the file is no zstd data.
    let walked = walk(TarReader::new(BufReader::with_capacity(1 << 20, stdout)), into);
    let status = finish(zstd)?;
    match (walked, status) {
        (Ok(listing), _) => Ok(listing),
        (Err(ArchiveError::Truncated | ArchiveError::Read(_)), Err(zstd)) => {
            Err(refused(ArchiveError::Compression(zstd)))
        }
        (Err(e), _) => Err(refused(e)),
    }
}

/// The members, in the only order an export has: the manifest, then each
/// layer the manifest lists, then the end.
fn walk(mut tar: TarReader<impl Read>, into: Option<&Path>) -> Result<Listing, ArchiveError> {
    let first = tar.next_member()?.ok_or_else(|| ArchiveError::NoManifest("nothing".into()))?;
    if first.name != "manifest.json" || first.map != [(0, first.size)] {
        return Err(ArchiveError::NoManifest(first.name));
    }
    let max = MAX_MANIFEST_BYTES as u64;
    if first.size > max {
        return Err(ArchiveError::Size { name: first.name, size: first.size, max });
    }
    let mut bytes = Vec::new();
    tar.read_data(&first, &mut |_, b| {
        bytes.extend_from_slice(b);
        Ok(())
    })?;
    let manifest = Manifest::parse(&bytes)?;
    let mut layers = Vec::new();
    for (i, layer) in manifest.layers.iter().enumerate() {
        let expected = layer_file(i);
        let member = tar.next_member()?.ok_or_else(|| ArchiveError::Unexpected {
            name: "the end of the archive".into(),
            expected: expected.clone(),
        })?;
        if member.name != expected {
            return Err(ArchiveError::Unexpected { name: member.name, expected });
        }
        if member.size != layer.bytes {
            return Err(ArchiveError::Size { name: member.name, size: member.size, max: layer.bytes });
        }
        match into {
            None => tar.skip_data()?,
            Some(dir) => write_layer(&mut tar, &member, &dir.join(&expected))?,
        }
        layers.push(member);
    }
    if let Some(extra) = tar.next_member()? {
        return Err(ArchiveError::Unexpected { name: extra.name, expected: "the end of the archive".into() });
    }
    Ok(Listing { manifest, layers })
}

fn write_layer(tar: &mut TarReader<impl Read>, member: &Member, path: &Path) -> Result<(), ArchiveError> {
    let sink = |source| ArchiveError::Sink { name: member.name.clone(), source };
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o444).open(path).map_err(sink)?;
    let mut writer = SparseWriter::new(&file);
    tar.read_data(member, &mut |at, data| writer.write_at(at, data))?;
    writer.finish(member.size).map_err(sink)?;
    Ok(())
}

fn zstd_program() -> Result<std::path::PathBuf, TemplateError> {
    moat_images::tools::search_path("zstd").ok_or_else(|| TemplateError::Zstd("is not installed".into()))
}

/// `zstd ARGS PATH` reading stdin.
fn spawn_zstd(args: &[&str], path: &Path) -> Result<Child, TemplateError> {
    Command::new(zstd_program()?)
        .args(args)
        .arg(path)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TemplateError::Zstd(format!("could not be started: {e}")))
}

/// `zstd -d` from `input` to a pipe, with its default memory limit (a frame
/// asking for a larger window is refused).
fn spawn_zstd_reader(input: File) -> Result<Child, TemplateError> {
    Command::new(zstd_program()?)
        .args(["-d", "-c", "-q", "--no-progress"])
        .current_dir("/")
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TemplateError::Zstd(format!("could not be started: {e}")))
}

/// Waits for zstd; `Err(what it said)` when it failed (not when we ended it).
fn finish(mut child: Child) -> Result<Result<(), String>, TemplateError> {
    drop(child.stdin.take());
    drop(child.stdout.take());
    let mut said = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.by_ref().take(4096).read_to_string(&mut said);
    }
    let status = child.wait().map_err(|e| TemplateError::Zstd(format!("could not be waited for: {e}")))?;
    let killed = std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL);
    Ok(if status.success() || killed { Ok(()) } else { Err(moat_text::escape_str(said.trim())) })
}
