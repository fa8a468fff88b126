//! `tubelet data synth`: writes the synthetic moving-shapes set as real files plus mmaction2
//! annotation lists, so the real-data path can be tried with nothing downloaded.
//!
//! Layout under `out`:
//! - rawframes: `train/clip_00000/img_00001.jpg …` and `train_list.txt` lines
//!   `train/clip_00000 <frames> <label>` (mmaction2 `RawframeDataset`, start index 1);
//! - mp4 (H.264) / webm (VP9): `train/clip_00000.mp4` and lines `train/clip_00000.mp4 <label>`
//!   (mmaction2 `VideoDataset`), encoded through `encode::VideoWriter`;
//!
//! and the same for `val` (the synthetic test split), plus `classes.txt`.
//! Paths in the lists are relative to `out`, the lists' own folder (the default data root).
//!
//! Pixel values: the set renders in [−1, 1]; files store round((v + 1)·127.5) clamped to bytes.

use std::path::Path;

use crate::dataset::{write_atomic, write_class_list};
use crate::encode::{Codec, VideoWriter};
use crate::synthetic::{render, Split, CLASS_NAMES};
use crate::{DataError, Result};

/// File format of the written set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JPEG frames (`img_{:05}.jpg`, quality 95).
    Rawframes,
    /// H.264 in MP4.
    Mp4,
    /// VP9 in WebM.
    Webm,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Format, String> {
        match s {
            "rawframes" => Ok(Format::Rawframes),
            "mp4" => Ok(Format::Mp4),
            "webm" => Ok(Format::Webm),
            _ => Err(format!("unknown format {s:?}; use mp4, webm or rawframes")),
        }
    }
}

/// What to write.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub format: Format,
    pub train_clips: usize,
    pub val_clips: usize,
    /// [T, H, W] of every clip.
    pub clip: [usize; 3],
    pub seed: u64,
    pub fps: u32,
}

/// Where the written set's lists are.
#[derive(Clone, Debug)]
pub struct Written {
    pub train_list: std::path::PathBuf,
    pub val_list: std::path::PathBuf,
    pub classes: std::path::PathBuf,
}

/// One rendered clip (T, H, W, 3) in [−1, 1] as bytes.
pub fn to_bytes(clip: &[f32]) -> Vec<u8> {
    clip.iter()
        .map(|v| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// Writes the set under `out` (created if missing).
pub fn write_set(out: &Path, opt: &SynthOptions) -> Result<Written> {
    let io = |p: &Path, e: std::io::Error| DataError::Io {
        path: p.to_path_buf(),
        msg: e.to_string(),
    };
    let [t, h, w] = opt.clip;
    if t == 0 || h == 0 || w == 0 {
        return Err(DataError::Config(format!(
            "synth: clip {:?} must be at least 1×1×1",
            opt.clip
        )));
    }
    let mut lists = Vec::new();
    for (name, split, n) in [
        ("train", Split::Train, opt.train_clips),
        ("val", Split::Test, opt.val_clips),
    ] {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut list = String::new();
        for i in 0..n {
            let (clip, labels) = render(opt.seed, opt.clip, split, i as u64, 1);
            let bytes = to_bytes(&clip);
            let frame = |k: usize| &bytes[k * h * w * 3..(k + 1) * h * w * 3];
            let stem = format!("clip_{i:05}");
            match opt.format {
                Format::Rawframes => {
                    let d = dir.join(&stem);
                    std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
                    for k in 0..t {
                        let p = d.join(format!("img_{:05}.jpg", k + 1));
                        let img = image::RgbImage::from_raw(w as u32, h as u32, frame(k).to_vec())
                            .expect("sized");
                        let mut buf = Vec::new();
                        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 95)
                            .encode_image(&img)
                            .map_err(|e| DataError::Io {
                                path: p.clone(),
                                msg: format!("cannot encode JPEG: {e}"),
                            })?;
                        std::fs::write(&p, buf).map_err(|e| io(&p, e))?;
                    }
                    list.push_str(&format!("{name}/{stem} {t} {}\n", labels[0]));
                }
                Format::Mp4 | Format::Webm => {
                    let (ext, codec) = if opt.format == Format::Mp4 {
                        ("mp4", Codec::H264)
                    } else {
                        ("webm", Codec::Vp9)
                    };
                    let p = dir.join(format!("{stem}.{ext}"));
                    let mut wr = VideoWriter::create(&p, codec, w, h, opt.fps)?;
                    for k in 0..t {
                        wr.write(frame(k))?;
                    }
                    wr.finish()?;
                    list.push_str(&format!("{name}/{stem}.{ext} {}\n", labels[0]));
                }
            }
        }
        let lp = out.join(format!("{name}_list.txt"));
        write_atomic(&lp, list.as_bytes())?;
        lists.push(lp);
    }
    let classes = out.join("classes.txt");
    let names: Vec<String> = CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    write_class_list(&classes, &names)?;
    let val_list = lists.pop().expect("two lists");
    let train_list = lists.pop().expect("two lists");
    Ok(Written {
        train_list,
        val_list,
        classes,
    })
}
