//! Video decoding: exact frames at arbitrary indices, with random access as decord does it.
//!
//! `VideoReader::open` indexes a file once: it demuxes every packet of the best video stream
//! without decoding (timestamps, keyframe flags), so the frame count is what the file really
//! holds, not what its header promises. `get_frames` then sorts and deduplicates the wanted
//! indices, seeks to the keyframe before each, decodes forward and converts (colour and size)
//! with swscale in one pass. Frame `i` is the frame with the `i`-th smallest presentation
//! timestamp, and every decoded frame is identified by its own timestamp, never by counting
//! after a seek, so B-frames, open GOPs, non-zero start times and variable frame rates give
//! exact indices. A stream whose timestamps cannot be trusted (missing, negative, repeated,
//! decode timestamps going backwards) is decoded sequentially from the start instead, and a
//! trusted stream that contradicts its index while decoding falls back to that too.
//!
//! Counterparts: `encode.rs` writes the files the tests read; `data/tests/video.rs` checks exact
//! indices on clips that stamp their own index; decord's `VideoReader::SeekAccurate`
//! (dmlc/decord src/video/video_reader.cc) and the traps listed by video_reader-rs are the
//! behaviour this matches. The FFmpeg side lives in `video/index.rs` (the index pass) and
//! `video/reader.rs` (seeking, decoding, conversion). Without the cargo feature `video` the
//! same API exists and every video is `DataError::NoVideoSupport`.
//!
//! NOTE: a frame the decoder skips after a seek (FFmpeg's H.264 decoder started at a non-IDR
//! keyframe can drop the GOP's last frame) is decoded again from the keyframe before, then
//! from the start; only a frame that never decodes is an error, which says how many of the
//! asked frames decoded. Nothing is padded or repeated.
//!
//! NOTE: memory stays bounded by the request: only the wanted frames are kept (converted), a
//! decoder holds a few reference frames, and the index is ~40 bytes per packet.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(not(feature = "video"))]
use crate::DataError;
use crate::{Frames, Result};

/// What the index of a video file found.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// Frames found by the index (packets of the video stream that show a frame).
    pub frames: usize,
    pub width: usize,
    pub height: usize,
    /// Average frame rate (the stream's, or frames over duration when it has none).
    pub fps: f64,
    /// FFmpeg's codec name: "h264", "hevc", "vp9", "mjpeg", ...
    pub codec: String,
    pub duration_s: f64,
    /// false when timestamps can't be trusted and decoding is sequential
    pub seekable: bool,
}

/// Decoder threads per video; 1 by default, because a loader decodes many videos at once
/// (mmaction2's `DecordInit` does the same). 0 lets FFmpeg choose.
static DECODER_THREADS: AtomicUsize = AtomicUsize::new(1);

/// Sets the number of decoder threads for videos opened from now on (0: FFmpeg's choice).
pub fn set_decoder_threads(n: usize) {
    DECODER_THREADS.store(n, Ordering::Relaxed);
}

/// Decoder threads that `VideoReader::open` uses.
pub fn decoder_threads() -> usize {
    DECODER_THREADS.load(Ordering::Relaxed)
}

/// An indexed video file, ready to hand out frames.
pub struct VideoReader {
    inner: Inner,
}

#[cfg(feature = "video")]
type Inner = reader::Reader;
/// Uninhabited: without the `video` feature no reader can exist.
#[cfg(not(feature = "video"))]
enum Inner {}

impl VideoReader {
    /// Opens and indexes the file once: demux all packets without decoding (pts, keyframes).
    pub fn open(path: &Path) -> Result<VideoReader> {
        #[cfg(feature = "video")]
        return Ok(VideoReader {
            inner: reader::Reader::open(path)?,
        });
        #[cfg(not(feature = "video"))]
        Err(DataError::NoVideoSupport {
            path: path.to_path_buf(),
        })
    }

    pub fn info(&self) -> &VideoInfo {
        #[cfg(feature = "video")]
        return self.inner.info();
        #[cfg(not(feature = "video"))]
        match self.inner {}
    }

    /// Frames at `indices` (any order, repeats allowed), in that order; RGB; converted and
    /// resized by swscale in one pass to `size` = Some([h, w]) (bilinear) or kept native when
    /// None. A frame that the index lists but that does not decode is an error saying how many
    /// of the asked frames decoded; nothing is padded or repeated.
    pub fn get_frames(&mut self, indices: &[usize], size: Option<[usize; 2]>) -> Result<Frames> {
        #[cfg(feature = "video")]
        return self.inner.get_frames(indices, size);
        #[cfg(not(feature = "video"))]
        {
            let _ = (indices, size);
            match self.inner {}
        }
    }

    /// Frames the container's header promises, when it says (often absent or wrong; the index
    /// count in `info().frames` is the one to use). A header promising more than the index
    /// found means a truncated or damaged file.
    pub fn header_frames(&self) -> Option<usize> {
        #[cfg(feature = "video")]
        return self.inner.header_frames();
        #[cfg(not(feature = "video"))]
        match self.inner {}
    }

    /// Why decoding is sequential (`info().seekable == false`), if it is.
    pub fn sequential_reason(&self) -> Option<&str> {
        #[cfg(feature = "video")]
        return self.inner.sequential_reason();
        #[cfg(not(feature = "video"))]
        match self.inner {}
    }

    /// From now on decode sequentially from the first frame, as for a file whose timestamps
    /// cannot be trusted (benchmarks compare the two; a user can force it for a misbehaving
    /// file).
    pub fn decode_sequentially(&mut self) {
        #[cfg(feature = "video")]
        self.inner.set_sequential("asked for by the caller".into());
        #[cfg(not(feature = "video"))]
        match self.inner {}
    }

    /// Packets decoded by this reader so far (a measure of work: random access decodes far
    /// fewer than the whole video).
    pub fn packets_decoded(&self) -> usize {
        #[cfg(feature = "video")]
        return self.inner.packets_decoded();
        #[cfg(not(feature = "video"))]
        match self.inner {}
    }
}

/// Starts FFmpeg once: its log goes quiet (per-file problems come back as errors that name the
/// file), unless `TUBELET_FFMPEG_LOG` asks for a level (quiet, fatal, error, warning, info,
/// verbose, debug).
#[cfg(feature = "video")]
pub(crate) fn init_ffmpeg() {
    use ffmpeg_next::util::log::{set_level, Level};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // NOTE: init() only registers things in FFmpeg 5+; it cannot fail there.
        let _ = ffmpeg_next::init();
        let level = match std::env::var("TUBELET_FFMPEG_LOG").as_deref() {
            Ok("fatal") => Level::Fatal,
            Ok("error") => Level::Error,
            Ok("warning") => Level::Warning,
            Ok("info") => Level::Info,
            Ok("verbose") => Level::Verbose,
            Ok("debug") => Level::Debug,
            // Even FFmpeg's "fatal" messages are per-file problems (MJPEG logs a bad frame
            // as fatal); our errors say them once, naming the file.
            _ => Level::Quiet,
        };
        set_level(level);
    });
}

#[cfg(feature = "video")]
mod index;
#[cfg(feature = "video")]
mod reader;

/// swscale's context, movable between threads (the reader's and the writer's).
#[cfg(feature = "video")]
pub(crate) struct SendScaler(pub(crate) ffmpeg_next::software::scaling::Context);
// SAFETY: an SwsContext has no thread affinity; it is only unsafe to use from two threads at
// once, and each `SendScaler` is owned by one reader or writer and used through `&mut`.
#[cfg(feature = "video")]
unsafe impl Send for SendScaler {}
