//! The [`Dataset`] abstraction and the file-backed datasets: mmaction2's `VideoDataset` and
//! `RawframeDataset` annotation lists and the folder-per-class layout (UCF101/HMDB51 unpacked).
//!
//! Loading one item: sample frame indices (sampling.rs), decode only those frames (FFmpeg
//! through `video::VideoReader`, or JPEG/PNG files through the `image` crate), then for each
//! view crop + resize + flip + normalise in one pass (transform.rs). Every random choice comes
//! from one generator seeded by (seed, epoch, index), so an item is the same whichever worker
//! thread loads it and whenever.
//!
//! Counterparts: mmaction2 `mmaction/datasets/{video_dataset,rawframe_dataset}.py` (list
//! formats), `transforms/loading.py` `RawFrameDecode` (file names: `filename_tmpl.format(i)`
//! with `i` = sampled index + `start_index`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tubelet::Rng;

use crate::spec::{DataSpec, Mode, Pipeline, Source};
use crate::transform::{self, CropBox};
use crate::video::VideoReader;
use crate::{sampling, DataError, Frames, Result};

/// A split of a dataset: items with labels, each loaded as one or more normalised clip views.
pub trait Dataset: Send + Sync {
    /// Items in the split.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn num_classes(&self) -> usize;
    /// Class names in label order, where the data names them (folder per class, synthetic).
    fn class_names(&self) -> Option<Vec<String>>;
    fn label(&self, index: usize) -> u32;
    /// What item `index` is, for messages: its file path, or "synthetic train #7".
    fn describe(&self, index: usize) -> String;
    /// [T, H, W] of every view.
    fn clip(&self) -> [usize; 3];
    /// Views per item (1 in training; the test views in testing).
    fn views(&self) -> usize;
    /// The clip views of item `index`, each a normalised (T, H, W, 3) f32 clip, channels-last,
    /// deterministic for (seed, epoch, index). A problem with the item's file is a
    /// [`DataError::is_bad_file`] error (the loader skips the item); anything else stops.
    fn load(&self, index: usize, seed: u64, epoch: u64) -> Result<Vec<Vec<f32>>>;
}

/// The random generator of one item in one epoch: independent of worker count and timing.
pub fn item_rng(seed: u64, epoch: u64, index: usize) -> Rng {
    let a = Rng::new(seed).next_u64();
    let b = Rng::new(a ^ epoch).next_u64();
    Rng::new(b ^ index as u64)
}

/// Where an item's frames live.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemKind {
    /// An encoded video file.
    Video,
    /// A folder of frame files; the count the list (or the folder) gives.
    Frames { total: usize },
}

/// One entry of a split.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub path: PathBuf,
    pub kind: ItemKind,
    pub label: u32,
}

/// A split backed by files: a video list, a rawframes list or a folder per class.
pub struct FileDataset {
    items: Vec<Item>,
    classes: Option<Vec<String>>,
    num_classes: usize,
    pipeline: Pipeline,
    mode: Mode,
    template: Template,
    start_index: usize,
}

impl FileDataset {
    /// Reads the list (or scans the folders) of `spec`; [`crate::open`] calls this.
    pub fn open(spec: &DataSpec, pipeline: Pipeline, mode: Mode) -> Result<FileDataset> {
        pipeline.validate()?;
        let template = Template::parse(&spec.template)?;
        let (items, classes) = match &spec.source {
            Source::VideoList(list) => (parse_list(list, spec.root.as_deref(), false)?, None),
            Source::RawframesList(list) => (parse_list(list, spec.root.as_deref(), true)?, None),
            Source::FolderPerClass(root) => {
                let (items, names) = scan_class_folders(root, &template, spec.start_index)?;
                (items, Some(names))
            }
            Source::Synthetic { .. } => {
                return Err(DataError::Config(
                    "the synthetic set is not file-backed; use tubelet_data::open".into(),
                ))
            }
        };
        let seen = classes.as_ref().map_or_else(
            || {
                items
                    .iter()
                    .map(|i| i.label as usize + 1)
                    .max()
                    .unwrap_or(0)
            },
            |c| c.len(),
        );
        let num_classes = match spec.num_classes {
            Some(n) if n < seen => {
                let (i, item) = items
                    .iter()
                    .enumerate()
                    .find(|(_, i)| i.label as usize >= n)
                    .expect("a label ≥ n exists");
                return Err(DataError::Config(format!(
                    "{} has label {} (item {i}), but the dataset is declared to have {n} classes",
                    item.path.display(),
                    item.label
                )));
            }
            Some(n) => n,
            None => seen,
        };
        Ok(FileDataset {
            items,
            classes,
            num_classes,
            pipeline,
            mode,
            template,
            start_index: spec.start_index,
        })
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Path of frame `i` (0-based) of a frame folder: the template formatted with
    /// `i + start_index`.
    pub fn frame_path(&self, dir: &Path, i: usize) -> PathBuf {
        dir.join(self.template.format(i + self.start_index))
    }

    /// Decodes frames `indices` (0-based, any order, repeats allowed) of `item` (through
    /// `reader` for a video), a video resized to the `short` side in the decoder; returns the distinct frames in ascending order and, for
    /// each wanted index, its position among them.
    fn decode(
        &self,
        item: &Item,
        reader: Option<&mut VideoReader>,
        indices: &[usize],
        short: Option<usize>,
    ) -> Result<(Frames, Vec<usize>)> {
        let mut distinct: Vec<usize> = indices.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let pos = indices
            .iter()
            .map(|i| distinct.binary_search(i).expect("present"))
            .collect();
        let frames = match reader {
            Some(reader) => {
                let info = reader.info();
                // swscale resizes in the decoding pass: ask for the short-side size directly.
                let size = short.map(|s| {
                    let (h, w) = transform::short_side_size(info.height, info.width, s);
                    [h, w]
                });
                reader.get_frames(&distinct, size)?
            }
            None => {
                let paths: Vec<PathBuf> = distinct
                    .iter()
                    .map(|&i| self.frame_path(&item.path, i))
                    .collect();
                read_frames(&paths)?
            }
        };
        if frames.shape[0] != distinct.len() {
            return Err(DataError::Decode {
                path: item.path.clone(),
                msg: format!(
                    "asked for {} frames, decoded {}",
                    distinct.len(),
                    frames.shape[0]
                ),
            });
        }
        Ok((frames, pos))
    }
}

impl Dataset for FileDataset {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn class_names(&self) -> Option<Vec<String>> {
        self.classes.clone()
    }

    fn label(&self, index: usize) -> u32 {
        self.items[index].label
    }

    fn describe(&self, index: usize) -> String {
        self.items[index].path.display().to_string()
    }

    fn clip(&self) -> [usize; 3] {
        self.pipeline.clip()
    }

    fn views(&self) -> usize {
        self.pipeline.views(self.mode)
    }

    fn load(&self, index: usize, seed: u64, epoch: u64) -> Result<Vec<Vec<f32>>> {
        let item = &self.items[index];
        let p = &self.pipeline;
        let mut rng = item_rng(seed, epoch, index);
        // A video is opened (its packets indexed) once per load.
        let mut reader = match item.kind {
            ItemKind::Video => Some(VideoReader::open(&item.path)?),
            ItemKind::Frames { .. } => None,
        };
        let total = match (&reader, &item.kind) {
            (Some(r), _) => r.info().frames,
            (None, ItemKind::Frames { total }) => *total,
            (None, ItemKind::Video) => 0,
        };
        if total == 0 {
            return Err(DataError::Decode {
                path: item.path.clone(),
                msg: "has no frames".into(),
            });
        }
        // (views, T) frame indices, 0-based.
        let views = sampling::sample(&p.sampling, total, self.mode, &mut rng);
        let wanted: Vec<usize> = views.iter().flatten().copied().collect();
        let short = match self.mode {
            Mode::Train => p.train_short_side,
            Mode::Test => p.test_short_side,
        };
        let (frames, pos) = self.decode(item, reader.as_mut(), &wanted, short)?;
        let [_, dh, dw] = frames.shape;
        // Crop geometry lives in the short-side-resized frame (as mmaction2 computes it); the
        // box is mapped back to the decoded frame so one bilinear pass does resize and crop.
        // NOTE: mmaction2 interpolates twice (Resize, then the crop's Resize); once is sharper.
        let (rh, rw) = short.map_or((dh, dw), |s| transform::short_side_size(dh, dw, s));
        let to_decoded = |b: CropBox| b.scaled(dh as f64 / rh as f64, dw as f64 / rw as f64);
        let boxes: Vec<CropBox> = match self.mode {
            Mode::Train => vec![transform::train_box(
                &p.train_crop,
                rh,
                rw,
                p.size,
                &mut rng,
            )],
            Mode::Test => transform::test_boxes(p.test_crop, rh, rw, p.size)
                .map_err(|m| DataError::Config(format!("{}: {m}", item.path.display())))?,
        };
        let flip = self.mode == Mode::Train && p.flip && rng.uniform() < 0.5;
        let t = p.clip_len();
        let mut out = Vec::with_capacity(boxes.len() * views.len());
        // Crop-major, then temporal view (mmaction2's ThreeCrop order).
        for b in boxes {
            for v in 0..views.len() {
                let ts = &pos[v * t..(v + 1) * t];
                out.push(transform::resample_clip(
                    &frames,
                    ts,
                    to_decoded(b),
                    p.size,
                    flip,
                    &p.norm,
                ));
            }
        }
        Ok(out)
    }
}

/// Reads frame files (JPEG or PNG, by content) into one RGB clip; every frame must have the
/// first one's size.
pub fn read_frames(paths: &[PathBuf]) -> Result<Frames> {
    let mut frames: Option<Frames> = None;
    for path in paths {
        let img = read_image(path)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let f = frames.get_or_insert_with(|| Frames::with_capacity(paths.len(), h, w));
        if [h, w] != [f.shape[1], f.shape[2]] {
            return Err(DataError::Decode {
                path: path.clone(),
                msg: format!(
                    "is {w}×{h}, the clip's first frame is {}×{}",
                    f.shape[2], f.shape[1]
                ),
            });
        }
        f.push(img.as_raw());
    }
    Ok(frames.unwrap_or_else(|| Frames::with_capacity(0, 0, 0)))
}

/// One JPEG or PNG file as RGB8.
pub fn read_image(path: &Path) -> Result<image::RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        msg: if e.kind() == std::io::ErrorKind::NotFound {
            "missing frame file".into()
        } else {
            e.to_string()
        },
    })?;
    if bytes.is_empty() {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            msg: "empty file (0 bytes)".into(),
        });
    }
    let img = image::load_from_memory(&bytes).map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        msg: format!("cannot decode image: {}", e.to_string().trim_end()),
    })?;
    Ok(img.into_rgb8())
}

/// A Python-style frame file name template: prefix, `{…}` with an optional zero-pad width,
/// suffix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    prefix: String,
    width: usize,
    suffix: String,
}

impl Template {
    /// Parses `img_{:05}.jpg`, `{:05d}.png`, `frame{}.jpg`, `{:d}.jpg`.
    pub fn parse(t: &str) -> Result<Template> {
        let bad = || {
            DataError::Config(format!(
                "frame file template {t:?}: expected one placeholder such as {{:05}}, {{:05d}}, {{}} or {{:d}}"
            ))
        };
        let open = t.find('{').ok_or_else(bad)?;
        let close = open + t[open..].find('}').ok_or_else(bad)?;
        let (prefix, spec, suffix) = (&t[..open], &t[open + 1..close], &t[close + 1..]);
        if suffix.contains('{') || suffix.contains('}') || prefix.contains('}') {
            return Err(bad());
        }
        let spec = spec.strip_prefix(':').unwrap_or(spec);
        let spec = spec.strip_suffix('d').unwrap_or(spec);
        let width = if spec.is_empty() {
            0
        } else {
            let digits = spec.strip_prefix('0').ok_or_else(bad)?;
            if digits.is_empty() {
                0
            } else {
                digits.parse().map_err(|_| bad())?
            }
        };
        Ok(Template {
            prefix: prefix.into(),
            width,
            suffix: suffix.into(),
        })
    }

    pub fn format(&self, n: usize) -> String {
        format!("{}{:0w$}{}", self.prefix, n, self.suffix, w = self.width)
    }
}

/// Parses an mmaction2 annotation list: `path label` (videos) or `dir total_frames label`
/// (rawframes), paths relative to `root` (default: the list's folder). Blank lines are
/// skipped; anything else malformed is an error with the file and line number.
pub fn parse_list(list: &Path, root: Option<&Path>, rawframes: bool) -> Result<Vec<Item>> {
    let text = std::fs::read_to_string(list).map_err(|e| DataError::Io {
        path: list.to_path_buf(),
        msg: format!("cannot read annotation list: {e}"),
    })?;
    let root = root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| list.parent().unwrap_or(Path::new("")).to_path_buf());
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let err = |msg: String| DataError::Annotation {
            path: list.to_path_buf(),
            line: n + 1,
            msg,
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let want = if rawframes {
            "`frame_dir total_frames label`"
        } else {
            "`path label`"
        };
        let expected = if rawframes { 3 } else { 2 };
        if fields.len() != expected {
            return Err(err(format!(
                "expected {want}, got {} fields: {line:?}",
                fields.len()
            )));
        }
        let label: u32 = fields[expected - 1].parse().map_err(|_| {
            err(format!(
                "label {:?} is not a non-negative integer ({want})",
                fields[expected - 1]
            ))
        })?;
        let kind = if rawframes {
            let total: usize = fields[1].parse().map_err(|_| {
                err(format!(
                    "total_frames {:?} is not a non-negative integer ({want})",
                    fields[1]
                ))
            })?;
            ItemKind::Frames { total }
        } else {
            ItemKind::Video
        };
        items.push(Item {
            path: root.join(fields[0]),
            kind,
            label,
        });
    }
    if items.is_empty() {
        return Err(DataError::Io {
            path: list.to_path_buf(),
            msg: "annotation list has no entries".into(),
        });
    }
    Ok(items)
}

/// Scans `root/<class>/<entry>`: classes are the sub-folders in sorted order (label = rank);
/// an entry is a video file, or a folder of frame files named by `template` (its frame count is
/// the number of consecutive files from `start_index`). Hidden entries are ignored.
pub fn scan_class_folders(
    root: &Path,
    template: &Template,
    start_index: usize,
) -> Result<(Vec<Item>, Vec<String>)> {
    let io = |p: &Path, e: std::io::Error| DataError::Io {
        path: p.to_path_buf(),
        msg: e.to_string(),
    };
    let listing = |dir: &Path| -> Result<Vec<(String, PathBuf)>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let e = e.map_err(|e| io(dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                v.push((name, e.path()));
            }
        }
        v.sort();
        Ok(v)
    };
    let classes: Vec<(String, PathBuf)> = listing(root)?
        .into_iter()
        .filter(|(_, p)| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(DataError::Io {
            path: root.to_path_buf(),
            msg: "has no class folders (expected root/<class>/<video>)".into(),
        });
    }
    let mut items = Vec::new();
    for (label, (_, dir)) in classes.iter().enumerate() {
        for (_, path) in listing(dir)? {
            let kind = if path.is_dir() {
                let mut total = 0;
                while path.join(template.format(total + start_index)).is_file() {
                    total += 1;
                }
                ItemKind::Frames { total }
            } else {
                ItemKind::Video
            };
            items.push(Item {
                path,
                kind,
                label: label as u32,
            });
        }
    }
    let names = classes.into_iter().map(|(n, _)| n).collect();
    Ok((items, names))
}

/// Writes the class list (one name a line, line k = label k) to `path` atomically, so a run's
/// labels are never ambiguous; e.g. `runs/x/classes.txt` beside the checkpoints.
pub fn write_class_list(path: &Path, names: &[String]) -> Result<()> {
    let mut text = String::new();
    for n in names {
        text.push_str(n);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| DataError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Items per label, for summaries (`tubelet data check`).
pub fn class_counts(ds: &dyn Dataset) -> BTreeMap<u32, usize> {
    let mut m = BTreeMap::new();
    for i in 0..ds.len() {
        *m.entry(ds.label(i)).or_insert(0) += 1;
    }
    m
}
