//! The persisted active color, so a restart or a binary upgrade comes back where it was.
//!
//! Written atomically (temp file in the same directory, fsync, rename, fsync of the
//! directory). A missing file means "first start": the config's `initial` color is used. A
//! file that exists but does not say `blue` or `green` is an error, never a silent fall-back:
//! guessing the color wrong would send production traffic to the idle deployment.
//!
//! Format: the color on the first line; in fleet mode a second line `epoch N` records which
//! fleet decision that color came from, so a member restarted while etcd is down comes back
//! on the fleet's last color and knows how old it is. A file without it (one instance, or
//! written before fleet mode) reads as before.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::color::Color;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "state file {path} says {content:?}, not \"blue\" or \"green\"; it is damaged. \
         Fix: write the color that should be live into it (echo green > {path}) or delete it \
         to start on [state] initial"
    )]
    Corrupt { path: PathBuf, content: String },
    #[error("state file {path}: cannot write it: {source} (traffic was not moved)")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads the persisted color; `Ok(None)` when there is no state file yet.
pub fn load(path: &Path) -> Result<Option<Color>, StateError> {
    Ok(load_saved(path)?.map(|s| s.color))
}

/// What the state file keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    pub color: Color,
    /// The fleet decision the color came from (fleet mode only).
    pub epoch: Option<u64>,
}

/// Reads the color and, in fleet mode, its epoch; `Ok(None)` when there is no file yet.
pub fn load_saved(path: &Path) -> Result<Option<Saved>, StateError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse_saved(&text)
        .map(Some)
        .ok_or_else(|| StateError::Corrupt {
            path: path.to_path_buf(),
            content: String::from_utf8_lossy(&text[..text.len().min(64)]).into_owned(),
        })
}

/// The state file's format: the color name, optionally followed by a newline.
pub fn parse(bytes: &[u8]) -> Option<Color> {
    parse_saved(bytes).map(|s| s.color)
}

/// The color line, then an optional `epoch N` line; anything else is damage.
pub fn parse_saved(bytes: &[u8]) -> Option<Saved> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let color = lines.next()?.parse().ok()?;
    let epoch = match lines.next() {
        None => None,
        Some(l) => Some(l.strip_prefix("epoch ")?.trim().parse().ok()?),
    };
    if lines.next().is_some() {
        return None;
    }
    Some(Saved { color, epoch })
}

/// Persists `color` so that a crash at any instant leaves either the old or the new file.
pub fn store(path: &Path, color: Color) -> Result<(), StateError> {
    store_saved(path, Saved { color, epoch: None })
}

/// Persists the color and its fleet epoch, atomically like [`store`].
pub fn store_saved(path: &Path, saved: Saved) -> Result<(), StateError> {
    let text = match saved.epoch {
        None => format!("{}\n", saved.color),
        Some(e) => format!("{}\nepoch {e}\n", saved.color),
    };
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        File::open(&dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state");
        assert!(load(&p).expect("absent is fine").is_none());
        store(&p, Color::Green).expect("store");
        assert_eq!(load(&p).expect("load"), Some(Color::Green));
        store(&p, Color::Blue).expect("store");
        assert_eq!(fs::read_to_string(&p).expect("read"), "blue\n");
        assert_eq!(
            fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn garbage_is_an_error_that_names_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state");
        fs::write(&p, b"gre").expect("write");
        let e = load(&p).expect_err("corrupt").to_string();
        assert!(e.contains("damaged") && e.contains("echo green >"), "{e}");
        fs::write(&p, b"").expect("write");
        assert!(load(&p).is_err(), "empty (truncated) file is corrupt too");
        assert_eq!(parse(b"green\n"), Some(Color::Green));
        assert_eq!(parse(b"\xff"), None);
        assert_eq!(parse(b"green\nepoch x\n"), None);
        assert_eq!(parse(b"green\nepoch 3\nmore\n"), None);
    }

    #[test]
    fn fleet_epoch_is_kept_and_old_files_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state");
        let s = Saved {
            color: Color::Green,
            epoch: Some(42),
        };
        store_saved(&p, s).expect("store");
        assert_eq!(fs::read_to_string(&p).expect("read"), "green\nepoch 42\n");
        assert_eq!(load_saved(&p).expect("load"), Some(s));
        assert_eq!(load(&p).expect("load"), Some(Color::Green));
        fs::write(&p, b"blue\n").expect("write");
        let old = load_saved(&p).expect("old format");
        assert_eq!(
            old,
            Some(Saved {
                color: Color::Blue,
                epoch: None
            })
        );
    }

    #[test]
    fn unwritable_dir_is_an_error() {
        let e = store(Path::new("/proc/switchyard-no/state"), Color::Blue);
        assert!(matches!(e, Err(StateError::Write { .. })));
    }
}
