//! `tubelet data check`: scans a dataset without training and reports, per file, its frame
//! count, resolution and codec or the problem that would make the loader skip it, plus the
//! items per class.
//!
//! Quick mode: a video is opened (its packets indexed) and its first and last frames decoded;
//! a frame folder has every listed frame file looked up (a missing or empty one is named) and
//! its first and last frames decoded. That finds unreadable, empty, truncated and short files
//! without decoding every frame. Full mode (`full`) decodes every frame, which also finds a
//! corrupt or odd-sized frame in the middle.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::dataset::{read_frames, FileDataset, ItemKind};
use crate::spec::{DataSpec, Mode, Pipeline};
use crate::video::VideoReader;
use crate::{DataError, Result};

/// What the scan found about one file.
#[derive(Clone, Debug, PartialEq)]
pub struct FileReport {
    pub path: PathBuf,
    pub label: u32,
    pub frames: Option<usize>,
    /// [height, width].
    pub size: Option<[usize; 2]>,
    /// Codec name (videos) or "jpeg"/"png"/… by file extension (frames).
    pub codec: Option<String>,
    pub problem: Option<String>,
}

/// The scan of a whole split.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub files: Vec<FileReport>,
    pub class_counts: BTreeMap<u32, usize>,
    pub class_names: Option<Vec<String>>,
    pub num_classes: usize,
}

impl CheckReport {
    pub fn bad(&self) -> impl Iterator<Item = &FileReport> {
        self.files.iter().filter(|f| f.problem.is_some())
    }
}

/// Scans every item of `spec` (a video list, rawframes list or folder per class) with up to
/// `threads` threads; `full` decodes every frame. An unreadable or malformed list is an
/// error; a bad file is a row.
pub fn scan(spec: &DataSpec, threads: usize, full: bool) -> Result<CheckReport> {
    // The pipeline does not matter for a scan; any valid one parses the list.
    let ds = FileDataset::open(spec, Pipeline::simple(1, 1, [1, 1]), Mode::Test)?;
    let items = ds.items();
    let threads = threads.clamp(1, items.len().max(1));
    let chunk = items.len().div_ceil(threads).max(1);
    let mut files: Vec<FileReport> = Vec::with_capacity(items.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                s.spawn(|| {
                    part.iter()
                        .map(|it| scan_item(&ds, it, full))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            files.extend(h.join().expect("scan thread"));
        }
    });
    let mut class_counts = BTreeMap::new();
    for it in items {
        *class_counts.entry(it.label).or_insert(0) += 1;
    }
    Ok(CheckReport {
        files,
        class_counts,
        class_names: crate::Dataset::class_names(&ds),
        num_classes: crate::Dataset::num_classes(&ds),
    })
}

fn scan_item(ds: &FileDataset, item: &crate::dataset::Item, full: bool) -> FileReport {
    let mut r = FileReport {
        path: item.path.clone(),
        label: item.label,
        frames: None,
        size: None,
        codec: None,
        problem: None,
    };
    let result: Result<()> = (|| match item.kind {
        ItemKind::Video => {
            let mut reader = VideoReader::open(&item.path)?;
            let info = reader.info().clone();
            r.frames = Some(info.frames);
            r.size = Some([info.height, info.width]);
            r.codec = Some(info.codec.clone());
            if info.frames == 0 {
                return Err(DataError::Decode {
                    path: item.path.clone(),
                    msg: "has no frames".into(),
                });
            }
            let wanted: Vec<usize> = if full {
                (0..info.frames).collect()
            } else {
                vec![0, info.frames - 1]
            };
            // In chunks, so a long video is never held whole.
            for part in wanted.chunks(64) {
                reader.get_frames(part, Some([info.height.min(64), info.width.min(64)]))?;
            }
            Ok(())
        }
        ItemKind::Frames { total } => {
            r.frames = Some(total);
            if !item.path.is_dir() {
                return Err(DataError::Io {
                    path: item.path.clone(),
                    msg: "frame folder does not exist".into(),
                });
            }
            if total == 0 {
                return Err(DataError::Decode {
                    path: item.path.clone(),
                    msg: "has no frames (total_frames 0)".into(),
                });
            }
            let name = |i: usize| {
                let p = ds.frame_path(&item.path, i);
                p.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            };
            let sizes: Vec<Option<u64>> = (0..total)
                .map(|i| {
                    std::fs::metadata(ds.frame_path(&item.path, i))
                        .ok()
                        .map(|m| m.len())
                })
                .collect();
            let missing: Vec<usize> = (0..total).filter(|&i| sizes[i].is_none()).collect();
            if let Some(&first) = missing.first() {
                let msg = format!(
                    "{} of {total} listed frames are missing, the first {}",
                    missing.len(),
                    name(first)
                );
                return Err(DataError::Decode {
                    path: item.path.clone(),
                    msg,
                });
            }
            if let Some(empty) = (0..total).find(|&i| sizes[i] == Some(0)) {
                return Err(DataError::Decode {
                    path: item.path.clone(),
                    msg: format!("{} is empty (0 bytes)", name(empty)),
                });
            }
            let first = ds.frame_path(&item.path, 0);
            r.codec = first
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase());
            let wanted: Vec<usize> = if full {
                (0..total).collect()
            } else {
                vec![0, total - 1]
            };
            let mut size = None;
            // In chunks, and each chunk against the first frame's size.
            for part in wanted.chunks(64) {
                let mut paths = vec![first.clone()];
                paths.extend(part.iter().map(|&i| ds.frame_path(&item.path, i)));
                let frames = read_frames(&paths)?;
                size = Some([frames.shape[1], frames.shape[2]]);
            }
            r.size = size;
            Ok(())
        }
    })();
    if let Err(e) = result {
        r.problem = Some(e.to_string());
    }
    r
}
