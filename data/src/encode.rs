//! Video encoding: RGB frames in, a real H.264 / VP9 / MJPEG / FFV1 file out, through the system
//! FFmpeg. `tubelet data synth` writes the synthetic set with it, and the video tests make their
//! clips with it (beside the `ffmpeg` CLI).
//!
//! The container comes from the file's extension (.mp4, .webm, .avi, .mkv, .mov, ...), the codec
//! from `Codec`; a pair FFmpeg cannot mux is an error before anything is written. The file
//! appears whole or not at all: frames go to a hidden `.NAME.partial` beside it, renamed on
//! `finish`, removed when the writer is dropped unfinished.
//!
//! Counterpart: `video.rs` reads these files back. Without the cargo feature `video`,
//! `VideoWriter::create` is `DataError::NoVideoSupport`.

use std::path::Path;

#[cfg(not(feature = "video"))]
use crate::DataError;
use crate::Result;

/// A video codec to write. Lossy ones use settings that keep the synthetic set's shapes sharp;
/// `Ffv1` is lossless (RGB planes kept exactly), for tests that compare pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// libx264, CRF 18, B-frames (x264's default 3), a keyframe every 2 s; yuv420p, or yuv444p
    /// when a side is odd (4:2:0 needs even sides).
    H264,
    /// libvpx-vp9, CRF 24, realtime speed; yuv420p (VP9 takes odd sides).
    Vp9,
    /// FFmpeg's MJPEG, quality 2 (every frame a JPEG, every frame a keyframe); yuvj420p.
    Mjpeg,
    /// FFV1 (lossless, intra-only) in 8-bit RGB (bgr0).
    Ffv1,
}

impl Codec {
    /// A container that holds this codec: "mp4", "webm", "avi", "mkv".
    pub fn extension(self) -> &'static str {
        match self {
            Codec::H264 => "mp4",
            Codec::Vp9 => "webm",
            Codec::Mjpeg => "avi",
            Codec::Ffv1 => "mkv",
        }
    }

    /// FFmpeg's name of the encoder used.
    pub fn encoder_name(self) -> &'static str {
        match self {
            Codec::H264 => "libx264",
            Codec::Vp9 => "libvpx-vp9",
            Codec::Mjpeg => "mjpeg",
            Codec::Ffv1 => "ffv1",
        }
    }
}

/// Writes RGB frames to a video file.
pub struct VideoWriter {
    inner: Inner,
}

#[cfg(feature = "video")]
type Inner = writer::Writer;
/// Uninhabited: without the `video` feature no writer can exist.
#[cfg(not(feature = "video"))]
enum Inner {}

impl VideoWriter {
    /// Starts a `width`×`height` video at `fps` frames per second; the container is guessed from
    /// `path`'s extension. The keyframe interval is 2 s (`create_with_gop` sets another).
    pub fn create(
        path: &Path,
        codec: Codec,
        width: usize,
        height: usize,
        fps: u32,
    ) -> Result<VideoWriter> {
        Self::create_with_gop(path, codec, width, height, fps, 2 * fps.max(1))
    }

    /// As `create`, with a keyframe at least every `gop` frames (MJPEG and FFV1 are intra-only:
    /// every frame is a keyframe whatever `gop` says).
    pub fn create_with_gop(
        path: &Path,
        codec: Codec,
        width: usize,
        height: usize,
        fps: u32,
        gop: u32,
    ) -> Result<VideoWriter> {
        #[cfg(feature = "video")]
        return Ok(VideoWriter {
            inner: writer::Writer::create(path, codec, width, height, fps, gop)?,
        });
        #[cfg(not(feature = "video"))]
        {
            let _ = (codec, width, height, fps, gop);
            Err(DataError::NoVideoSupport {
                path: path.to_path_buf(),
            })
        }
    }

    /// Appends one frame: H·W·3 bytes, RGB, rows top to bottom.
    pub fn write(&mut self, rgb: &[u8]) -> Result<()> {
        #[cfg(feature = "video")]
        return self.inner.write(rgb);
        #[cfg(not(feature = "video"))]
        {
            let _ = rgb;
            match self.inner {}
        }
    }

    /// Flushes the encoder, writes the trailer and moves the file into place.
    pub fn finish(self) -> Result<()> {
        #[cfg(feature = "video")]
        return self.inner.finish();
        #[cfg(not(feature = "video"))]
        match self.inner {}
    }
}

#[cfg(feature = "video")]
mod writer {
    use std::ffi::{CStr, CString};
    use std::path::{Path, PathBuf};

    use ffmpeg::software::scaling;
    use ffmpeg::util::format::Pixel;
    use ffmpeg::{codec, encoder, ffi, format, frame, Dictionary, Packet, Rational};
    use ffmpeg_next as ffmpeg;

    use super::Codec;
    use crate::video::SendScaler;
    use crate::{DataError, Result};

    pub(super) struct Writer {
        path: PathBuf,
        partial: PathBuf,
        /// None once `finish` has closed the file.
        octx: Option<format::context::Output>,
        encoder: encoder::Video,
        scaler: SendScaler,
        stream: usize,
        encoder_tb: Rational,
        stream_tb: Rational,
        width: usize,
        height: usize,
        frames: i64,
        done: bool,
    }

    fn err(path: &Path, msg: impl Into<String>) -> DataError {
        DataError::Decode {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    /// FFmpeg's muxer name for the file's extension ("mp4", "webm", "avi", "matroska", ...).
    fn muxer_for(path: &Path) -> Result<(&'static CStr, *const ffi::AVOutputFormat)> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let c = CString::new(name).map_err(|_| err(path, "file name has a NUL byte"))?;
        // SAFETY: av_guess_format reads the C string and returns a static muxer or null.
        let fmt = unsafe { ffi::av_guess_format(std::ptr::null(), c.as_ptr(), std::ptr::null()) };
        if fmt.is_null() {
            return Err(err(
                path,
                "no container for this file extension (use .mp4, .webm, .avi, .mkv or .mov)",
            ));
        }
        // SAFETY: a muxer's name is a static C string.
        Ok((unsafe { CStr::from_ptr((*fmt).name) }, fmt))
    }

    impl Writer {
        pub(super) fn create(
            path: &Path,
            codec: Codec,
            width: usize,
            height: usize,
            fps: u32,
            gop: u32,
        ) -> Result<Writer> {
            crate::video::init_ffmpeg();
            if width == 0 || height == 0 || fps == 0 {
                return Err(DataError::Config(format!(
                    "{}: cannot write a {width}x{height} video at {fps} fps; all must be at \
                     least 1",
                    path.display()
                )));
            }
            let (muxer, oformat) = muxer_for(path)?;
            let muxer = muxer.to_string_lossy().into_owned();
            let Some(enc_codec) = encoder::find_by_name(codec.encoder_name()) else {
                return Err(err(
                    path,
                    format!("this FFmpeg build has no {} encoder", codec.encoder_name()),
                ));
            };
            // SAFETY: a static muxer and a codec id; only asks whether the pair can be muxed.
            let fits = unsafe {
                ffi::avformat_query_codec(oformat, enc_codec.id().into(), ffi::FF_COMPLIANCE_NORMAL)
            };
            if fits == 0 {
                return Err(err(
                    path,
                    format!(
                        "the {muxer} container cannot hold {codec:?} video (use .{})",
                        codec.extension()
                    ),
                ));
            }
            let pixel = match codec {
                Codec::H264 if width % 2 == 1 || height % 2 == 1 => Pixel::YUV444P,
                Codec::H264 | Codec::Vp9 => Pixel::YUV420P,
                Codec::Mjpeg => Pixel::YUVJ420P,
                // FFV1 has no 8-bit planar RGB; packed BGR0 keeps RGB exactly too.
                Codec::Ffv1 => Pixel::BGRZ,
            };

            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("video");
            let partial = path.with_file_name(format!(".{file_name}.partial"));
            let mut octx = format::output_as(&partial, &muxer)
                .map_err(|e| err(path, format!("cannot create {}: {e}", partial.display())))?;
            let global_header = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);
            let stream = octx
                .add_stream(enc_codec)
                .map_err(|e| err(path, format!("cannot add a video stream: {e}")))?
                .index();

            let mut enc = codec::context::Context::new_with_codec(enc_codec)
                .encoder()
                .video()
                .map_err(|e| err(path, format!("cannot set up {}: {e}", codec.encoder_name())))?;
            enc.set_width(width as u32);
            enc.set_height(height as u32);
            enc.set_format(pixel);
            let encoder_tb = Rational::new(1, fps as i32);
            enc.set_time_base(encoder_tb);
            enc.set_frame_rate(Some(Rational::new(fps as i32, 1)));
            if global_header {
                enc.set_flags(codec::Flags::GLOBAL_HEADER);
            }
            let mut opts = Dictionary::new();
            match codec {
                Codec::H264 => {
                    enc.set_gop(gop.max(1));
                    opts.set("preset", "veryfast");
                    opts.set("crf", "18");
                }
                Codec::Vp9 => {
                    enc.set_gop(gop.max(1));
                    opts.set("crf", "24");
                    opts.set("b", "0");
                    opts.set("deadline", "realtime");
                    opts.set("cpu-used", "8");
                }
                Codec::Mjpeg => {
                    // Fixed quantiser 2 (FFmpeg's -q:v 2): near-transparent JPEGs.
                    enc.set_flags(
                        codec::Flags::QSCALE
                            | if global_header {
                                codec::Flags::GLOBAL_HEADER
                            } else {
                                codec::Flags::empty()
                            },
                    );
                    enc.set_global_quality(2 * ffi::FF_QP2LAMBDA);
                    enc.set_qmin(2);
                    enc.set_qmax(2);
                }
                Codec::Ffv1 => enc.set_gop(1),
            }
            let encoder = enc
                .open_with(opts)
                .map_err(|e| err(path, format!("cannot open {}: {e}", codec.encoder_name())))?;
            if let Some(mut st) = octx.stream_mut(stream) {
                st.set_parameters(&encoder);
                st.set_time_base(encoder_tb);
            }
            octx.write_header()
                .map_err(|e| err(path, format!("cannot write the {muxer} header: {e}")))?;
            let stream_tb = octx
                .stream(stream)
                .map(|s| s.time_base())
                .unwrap_or(encoder_tb);
            let ctx = scaling::Context::get(
                Pixel::RGB24,
                width as u32,
                height as u32,
                pixel,
                width as u32,
                height as u32,
                scaling::Flags::BILINEAR,
            )
            .map_err(|e| err(path, format!("cannot convert RGB to {pixel:?}: {e}")))?;
            Ok(Writer {
                path: path.to_path_buf(),
                partial,
                octx: Some(octx),
                encoder,
                scaler: SendScaler(ctx),
                stream,
                encoder_tb,
                stream_tb,
                width,
                height,
                frames: 0,
                done: false,
            })
        }

        pub(super) fn write(&mut self, rgb: &[u8]) -> Result<()> {
            let (w, h) = (self.width, self.height);
            if rgb.len() != h * w * 3 {
                return Err(DataError::Config(format!(
                    "{}: frame {} has {} bytes; a {h}x{w} RGB frame has {}",
                    self.path.display(),
                    self.frames,
                    rgb.len(),
                    h * w * 3
                )));
            }
            let mut src = frame::Video::new(Pixel::RGB24, w as u32, h as u32);
            let stride = src.stride(0);
            let plane = src.data_mut(0);
            for y in 0..h {
                plane[y * stride..y * stride + w * 3]
                    .copy_from_slice(&rgb[y * w * 3..(y + 1) * w * 3]);
            }
            // A fresh frame each time: the encoder may keep a reference to the last one.
            let mut yuv = frame::Video::empty();
            self.scaler
                .0
                .run(&src, &mut yuv)
                .map_err(|e| err(&self.path, format!("colour conversion failed: {e}")))?;
            yuv.set_pts(Some(self.frames));
            self.frames += 1;
            self.encoder.send_frame(&yuv).map_err(|e| {
                err(
                    &self.path,
                    format!("encoding frame {}: {e}", self.frames - 1),
                )
            })?;
            self.write_packets()
        }

        /// Moves every packet the encoder has ready into the file.
        fn write_packets(&mut self) -> Result<()> {
            let Some(octx) = self.octx.as_mut() else {
                return Err(err(&self.path, "the file is already finished"));
            };
            let mut pkt = Packet::empty();
            while self.encoder.receive_packet(&mut pkt).is_ok() {
                pkt.set_stream(self.stream);
                // NOTE: without a duration, mp4's edit list ends where the last frame starts
                // and the demuxer marks that frame "discard": a frame short on reading back.
                if pkt.duration() == 0 {
                    pkt.set_duration(1);
                }
                pkt.rescale_ts(self.encoder_tb, self.stream_tb);
                pkt.write_interleaved(octx)
                    .map_err(|e| err(&self.path, format!("writing a packet: {e}")))?;
            }
            Ok(())
        }

        pub(super) fn finish(mut self) -> Result<()> {
            self.encoder
                .send_eof()
                .map_err(|e| err(&self.path, format!("flushing the encoder: {e}")))?;
            self.write_packets()?;
            let Some(mut octx) = self.octx.take() else {
                return Err(err(&self.path, "the file is already finished"));
            };
            octx.write_trailer()
                .map_err(|e| err(&self.path, format!("writing the trailer: {e}")))?;
            // Close the file before the rename (Windows cannot rename an open file).
            drop(octx);
            std::fs::rename(&self.partial, &self.path).map_err(|e| DataError::Io {
                path: self.path.clone(),
                msg: format!("cannot move {} into place: {e}", self.partial.display()),
            })?;
            self.done = true;
            Ok(())
        }
    }

    impl Drop for Writer {
        fn drop(&mut self) {
            if !self.done {
                // An unfinished file is not a video: leave nothing that looks like one.
                let _ = std::fs::remove_file(&self.partial);
            }
        }
    }
}
