//! Start-up repair of recordings interrupted by a crash.
//!
//! Files in the spool are recordings in progress; the driver moves a recording out once it is
//! finished and catalogued, and marks its sidecar `complete`. Anything else found at start-up
//! was interrupted:
//!
//! * a WAV gets its RIFF and `data` sizes recomputed from the file length, truncated to whole
//!   frames (a file cut inside its header gets a fresh, empty header);
//! * an MP3 is kept as it is: its frames are self-delimiting and players skip a cut last frame;
//! * its sidecar is marked `interrupted` and `repaired`, given the duration found on disk and
//!   its end time; a missing sidecar is created with what the file tells.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::RecorderError;
use crate::metadata::{sidecar_path, RecordingMetadata};
use crate::sink::{wav_header, Format, MP3_KBPS, WAV_HEADER_LEN};

/// A spool file that was repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairedFile {
    pub path: PathBuf,
    pub format: Format,
    /// Audio length found on disk, in milliseconds (estimated from the size for MP3).
    pub duration_ms: u64,
    /// The updated sidecar, already written next to the file.
    pub metadata: RecordingMetadata,
}

/// Repairs every interrupted recording in `dir`. Files that cannot be repaired are logged and
/// skipped; only failing to list the directory is an error.
pub fn repair_spool(dir: &Path) -> Result<Vec<RepairedFile>, RecorderError> {
    let entries = fs::read_dir(dir).map_err(|e| RecorderError::io("read spool", dir, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut repaired = Vec::new();
    for path in paths {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("wav") => Format::Wav,
            Some(e) if e.eq_ignore_ascii_case("mp3") => Format::Mp3,
            _ => continue,
        };
        let sidecar = sidecar_path(&path);
        let existing = RecordingMetadata::read_from(&sidecar).ok();
        if existing.as_ref().is_some_and(|m| m.complete) {
            continue;
        }
        match repair_file(&path, format, existing, &sidecar) {
            Ok(file) => {
                tracing::warn!(path = %path.display(), duration_ms = file.duration_ms,
                    "repaired interrupted recording");
                repaired.push(file);
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot repair recording");
            }
        }
    }
    Ok(repaired)
}

fn repair_file(
    path: &Path,
    format: Format,
    existing: Option<RecordingMetadata>,
    sidecar: &Path,
) -> Result<RepairedFile, RecorderError> {
    let rate = u64::from(crate::SAMPLE_RATE);
    let frames = match format {
        Format::Wav => repair_wav(path)?,
        Format::Mp3 => {
            let len = fs::metadata(path)
                .map_err(|e| RecorderError::io("stat", path, e))?
                .len();
            len * 8 * rate / (u64::from(MP3_KBPS) * 1000)
        }
    };
    let duration_ms = frames * 1000 / rate;
    let mut metadata = existing.unwrap_or_else(|| RecordingMetadata {
        contact_id: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        format,
        ..RecordingMetadata::default()
    });
    metadata.interrupted = true;
    metadata.repaired = true;
    metadata.complete = true;
    metadata.duration_ms = duration_ms;
    // The segment list stops at the last sidecar update while the audio may go further: the
    // open segment is taken to run to the end of the file.
    if let Some(open) = metadata
        .segments
        .last_mut()
        .filter(|s| s.end_frame.is_none())
    {
        let end = frames.max(open.start_frame);
        open.end_frame = Some(end);
        open.call_end_ms = Some(open.call_start_ms + (end - open.start_frame) * 1000 / rate);
        open.end_reason = Some("interrupted".to_string());
    }
    let last_end = metadata
        .segments
        .iter()
        .filter_map(|s| s.call_end_ms)
        .max()
        .unwrap_or(0);
    metadata.call_duration_ms = metadata.call_duration_ms.max(last_end).max(duration_ms);
    if metadata.start_unix_ms > 0 {
        metadata.end_unix_ms = Some(metadata.start_unix_ms + metadata.call_duration_ms);
    }
    metadata.write_to(sidecar)?;
    Ok(RepairedFile {
        path: path.to_path_buf(),
        format,
        duration_ms,
        metadata,
    })
}

/// Fixes a WAV header from the file length; returns the number of frames kept.
pub fn repair_wav(path: &Path) -> Result<u64, RecorderError> {
    let io = |op| move |e| RecorderError::io(op, path, e);
    let mut file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io("open"))?;
    let len = file.metadata().map_err(io("stat"))?.len();
    let mut head = vec![0u8; len.min(4096) as usize];
    file.read_exact(&mut head).map_err(io("read"))?;
    let (data_start, frame_bytes) = if len < WAV_HEADER_LEN {
        if !head.is_empty() && !b"RIFF".starts_with(&head[..head.len().min(4)]) {
            return Err(RecorderError::NotWav {
                path: path.to_path_buf(),
                reason: "no RIFF signature",
            });
        }
        // Cut inside the header written at creation: nothing was recorded.
        file.set_len(0).map_err(io("truncate"))?;
        file.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
        file.write_all(&wav_header(0)).map_err(io("write"))?;
        file.flush().map_err(io("flush"))?;
        return Ok(0);
    } else {
        parse_wav_layout(&head).map_err(|reason| RecorderError::NotWav {
            path: path.to_path_buf(),
            reason,
        })?
    };
    let data = len.saturating_sub(data_start);
    let data = (data / frame_bytes * frame_bytes)
        .min(u64::from(u32::MAX - 36) / frame_bytes * frame_bytes);
    file.set_len(data_start + data).map_err(io("truncate"))?;
    let riff = (data_start + data - 8) as u32;
    file.seek(SeekFrom::Start(4)).map_err(io("seek"))?;
    file.write_all(&riff.to_le_bytes()).map_err(io("write"))?;
    file.seek(SeekFrom::Start(data_start - 4))
        .map_err(io("seek"))?;
    file.write_all(&(data as u32).to_le_bytes())
        .map_err(io("write"))?;
    file.flush().map_err(io("flush"))?;
    Ok(data / frame_bytes)
}

/// Finds where the `data` chunk's samples start and the frame size (block align).
pub(crate) fn parse_wav_layout(head: &[u8]) -> Result<(u64, u64), &'static str> {
    if head.len() < 12 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err("no RIFF/WAVE signature");
    }
    let mut pos = 12usize;
    let mut block_align = None;
    while pos + 8 <= head.len() {
        let id = &head[pos..pos + 4];
        let size = u32::from_le_bytes([head[pos + 4], head[pos + 5], head[pos + 6], head[pos + 7]]);
        if id == b"data" {
            let align = block_align.ok_or("data chunk before fmt chunk")?;
            return Ok(((pos + 8) as u64, align));
        }
        if id == b"fmt " {
            let fmt = head.get(pos + 8..pos + 24).ok_or("fmt chunk cut short")?;
            let align = u16::from_le_bytes([fmt[12], fmt[13]]);
            if align == 0 {
                return Err("block align is zero");
            }
            block_align = Some(u64::from(align));
        }
        pos = pos
            .checked_add(8 + size as usize + (size as usize & 1))
            .ok_or("chunk size overflows")?;
    }
    Err("no data chunk in the first 4 KiB")
}
