//! The line loop shared by the text formats: one reusable buffer (no
//! allocation per line), UTF-8 and trimming, and errors that name the file,
//! the line number and the offending line.

use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::Arc;

use super::GeoError;

/// Why one line was refused; the loop adds the file, line and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineFault {
    Bad(&'static str),
    /// The range starts before the previous one, or overlaps it.
    Unsorted,
}

impl From<&'static str> for LineFault {
    fn from(reason: &'static str) -> Self {
        LineFault::Bad(reason)
    }
}

/// Calls `f(line_number, line)` for every non-empty line, trimmed of ASCII
/// whitespace (comments included: formats decide what a comment is).
pub(crate) fn for_each_line(
    mut r: impl BufRead,
    file: &str,
    mut f: impl FnMut(usize, &str) -> Result<(), LineFault>,
) -> Result<(), GeoError> {
    let mut buf = Vec::with_capacity(256);
    let mut lineno = 0usize;
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).map_err(|e| GeoError::Io {
            file: file.to_owned(),
            source: Arc::new(e),
        })?;
        if n == 0 {
            return Ok(());
        }
        lineno += 1;
        let fault = match std::str::from_utf8(&buf) {
            Err(_) => LineFault::Bad("not UTF-8"),
            Ok(line) => {
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                match f(lineno, line) {
                    Ok(()) => continue,
                    Err(fault) => fault,
                }
            }
        };
        return Err(match fault {
            LineFault::Bad(reason) => GeoError::BadLine {
                file: file.to_owned(),
                line: lineno,
                reason,
                content: String::from_utf8_lossy(&buf[..buf.len().min(120)])
                    .trim_end()
                    .to_owned(),
            },
            LineFault::Unsorted => GeoError::Unsorted {
                file: file.to_owned(),
                line: lineno,
            },
        });
    }
}

/// A gzip stream over in-memory bytes (the embedded data).
pub(crate) fn gunzip(bytes: &[u8]) -> impl BufRead + '_ {
    std::io::BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(bytes))
}

/// Reads a whole data file, gunzipping it when it starts with the gzip magic.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, GeoError> {
    let io = |e: std::io::Error| GeoError::Io {
        file: path.display().to_string(),
        source: Arc::new(e),
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}
