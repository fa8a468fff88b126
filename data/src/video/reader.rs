//! The FFmpeg side of `VideoReader` (see `video.rs` for the contract): seeking to a keyframe
//! and decoding forward, each decoded frame named by its timestamp through the index
//! (`index.rs`); sequential decoding when timestamps cannot be trusted; swscale's colour
//! conversion and resize in one pass.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use ffmpeg::ffi;
use ffmpeg::software::scaling;
use ffmpeg::util::format::Pixel;
use ffmpeg::{codec, format, frame, media, Packet, Rational};
use ffmpeg_next as ffmpeg;

use super::index::Index;
use super::{SendScaler, VideoInfo};
use crate::{DataError, Frames, Result};

/// Why a fast path gave up; `Untrusted` switches the reader to sequential decoding.
enum Fail {
    Untrusted(String),
    Data(DataError),
}

impl From<DataError> for Fail {
    fn from(e: DataError) -> Fail {
        Fail::Data(e)
    }
}

/// swscale's context and what it converts: (source format, width, height, out width, height).
struct Scaler {
    ctx: SendScaler,
    key: (Pixel, u32, u32, u32, u32),
}

/// State of the decoder between packets.
#[derive(Default)]
struct Run {
    /// The decoder has been fed packets in order from `started` up to `next` (exclusive).
    active: bool,
    started: usize,
    next: usize,
    /// Timestamp (seek mode) or frame number (sequential) of the last frame out.
    last_out: Option<i64>,
    /// Frames out since the run started at packet 0 (sequential mode's frame numbers).
    out_count: usize,
    eof: bool,
    /// Decode straight on, no seeks: a retry for a frame the decoder skipped.
    no_seek: bool,
}

/// The wanted frames of one `get_frames` call.
struct Want {
    /// Frame indices still to decode.
    remaining: BTreeSet<usize>,
    /// Frame indices the decoder skipped even when decoding from the first packet.
    missing: BTreeSet<usize>,
    /// Frame index -> slot in `out` (its first position in the request).
    slot: HashMap<usize, usize>,
    out: Vec<u8>,
    h: usize,
    w: usize,
}

pub(super) struct Reader {
    path: PathBuf,
    input: format::context::Input,
    stream: usize,
    decoder: ffmpeg::decoder::Video,
    info: VideoInfo,
    header_frames: Option<usize>,
    index: Index,
    run: Run,
    /// A packet read but not yet fed (sequential mode checks the first packet after a seek).
    pending: Option<Packet>,
    decoded: frame::Video,
    rgb: frame::Video,
    scaler: Option<Scaler>,
    packets_decoded: usize,
    decode_errors: usize,
    last_decode_error: Option<String>,
}

fn decode_err(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Decode {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn is_again(e: &ffmpeg::Error) -> bool {
    matches!(e, ffmpeg::Error::Other { errno } if *errno == ffmpeg::util::error::EAGAIN)
}

fn open_input(path: &Path) -> Result<format::context::Input> {
    format::input(path).map_err(|e| {
        let why = match e {
            ffmpeg::Error::InvalidData => {
                "not a video FFmpeg can read (invalid data: truncated, damaged or not a \
                 media file)"
                    .to_string()
            }
            e => format!("FFmpeg cannot open it: {e}"),
        };
        decode_err(path, why)
    })
}

impl Reader {
    pub(super) fn open(path: &Path) -> Result<Reader> {
        super::init_ffmpeg();
        let meta = std::fs::metadata(path).map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            msg: format!("cannot read the video: {e}"),
        })?;
        if meta.len() == 0 {
            return Err(decode_err(path, "empty file (0 bytes)"));
        }
        let mut input = open_input(path)?;
        let Some(stream) = input.streams().best(media::Type::Video) else {
            let kinds: Vec<String> = input
                .streams()
                .map(|s| {
                    format!(
                        "{:?} ({})",
                        s.parameters().medium(),
                        s.parameters().id().name()
                    )
                })
                .collect();
            let has = if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            };
            return Err(decode_err(
                path,
                format!("no video stream (streams: {has})"),
            ));
        };
        let stream_index = stream.index();
        let time_base = stream.time_base();
        let params = stream.parameters();
        let codec_name = params.id().name().to_string();
        let header_frames = (stream.frames() > 0).then_some(stream.frames() as usize);
        let avg_rate = stream.avg_frame_rate();
        let real_rate = stream.rate();
        let stream_duration = stream.duration();

        let mut ctx = codec::context::Context::from_parameters(params)
            .map_err(|e| decode_err(path, format!("bad codec parameters: {e}")))?;
        let threads = super::decoder_threads();
        // SAFETY: plain fields of a context we own, set before the decoder opens.
        unsafe {
            let raw = ctx.as_mut_ptr();
            (*raw).thread_count = threads as i32;
            (*raw).thread_type = ffi::FF_THREAD_FRAME | ffi::FF_THREAD_SLICE;
            // Decoded frames carry packet timestamps in this time base.
            (*raw).pkt_timebase = time_base.into();
        }
        let decoder = ctx.decoder().video().map_err(|e| {
            decode_err(
                path,
                format!("no {codec_name} decoder in this FFmpeg build ({e})"),
            )
        })?;
        let (width, height) = (decoder.width() as usize, decoder.height() as usize);
        if width == 0 || height == 0 {
            return Err(decode_err(
                path,
                format!("{codec_name} stream has no frame size"),
            ));
        }

        let index = Index::read(&mut input, stream_index);
        let frames = index.frames();
        if frames == 0 {
            let why = match &index.stop {
                Some(e) => format!("no video frames could be read ({codec_name}; {e})"),
                None => format!("the {codec_name} stream has no frames"),
            };
            return Err(decode_err(path, why));
        }

        let mut reader = Reader {
            path: path.to_path_buf(),
            input,
            stream: stream_index,
            decoder,
            info: VideoInfo {
                frames,
                width,
                height,
                fps: 0.0,
                codec: codec_name,
                duration_s: 0.0,
                seekable: index.seekable(),
            },
            header_frames,
            index,
            run: Run::default(),
            pending: None,
            decoded: frame::Video::empty(),
            rgb: frame::Video::empty(),
            scaler: None,
            packets_decoded: 0,
            decode_errors: 0,
            last_decode_error: None,
        };
        reader.info.duration_s = reader
            .index
            .duration_s(f64::from(time_base), stream_duration);
        reader.info.fps =
            rate(avg_rate)
                .or(rate(real_rate))
                .unwrap_or(if reader.info.duration_s > 0.0 {
                    frames as f64 / reader.info.duration_s
                } else {
                    0.0
                });
        if reader.info.duration_s <= 0.0 && reader.info.fps > 0.0 {
            reader.info.duration_s = frames as f64 / reader.info.fps;
        }
        Ok(reader)
    }

    pub(super) fn info(&self) -> &VideoInfo {
        &self.info
    }

    pub(super) fn header_frames(&self) -> Option<usize> {
        self.header_frames
    }

    pub(super) fn sequential_reason(&self) -> Option<&str> {
        self.index.untrusted.as_deref()
    }

    pub(super) fn set_sequential(&mut self, why: String) {
        self.info.seekable = false;
        self.index.set_untrusted(why);
        self.run = Run::default();
    }

    pub(super) fn packets_decoded(&self) -> usize {
        self.packets_decoded
    }

    pub(super) fn get_frames(
        &mut self,
        indices: &[usize],
        size: Option<[usize; 2]>,
    ) -> Result<Frames> {
        let [h, w] = size.unwrap_or([self.info.height, self.info.width]);
        if h == 0 || w == 0 {
            return Err(DataError::Config(format!(
                "{}: frame size {h}x{w} asked; both sides must be at least 1",
                self.path.display()
            )));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.info.frames) {
            return Err(decode_err(
                &self.path,
                format!(
                    "frame {bad} asked, but the video has {} frames",
                    self.info.frames
                ),
            ));
        }
        let frame_bytes = h * w * 3;
        let mut want = Want {
            remaining: indices.iter().copied().collect(),
            missing: BTreeSet::new(),
            slot: HashMap::with_capacity(indices.len()),
            out: vec![0; indices.len() * frame_bytes],
            h,
            w,
        };
        for (k, &i) in indices.iter().enumerate() {
            want.slot.entry(i).or_insert(k);
        }
        let asked = want.remaining.len();
        self.run.no_seek = false;
        if self.info.seekable {
            match self.decode_seeking(&mut want) {
                Ok(()) => {}
                Err(Fail::Data(e)) => return Err(e),
                Err(Fail::Untrusted(why)) => {
                    // Timestamps contradicted the index: from now on, decode in order.
                    self.set_sequential(why);
                    want.remaining = want.slot.keys().copied().collect();
                    want.missing.clear();
                    self.decode_sequential(&mut want)?;
                }
            }
        } else {
            self.decode_sequential(&mut want)?;
        }
        want.missing.append(&mut want.remaining);
        if !want.missing.is_empty() {
            return Err(self.missing_error(&want, asked));
        }
        // Repeated indices: copy from the first occurrence.
        for (k, &i) in indices.iter().enumerate() {
            let first = want.slot[&i];
            if first != k {
                want.out.copy_within(
                    first * frame_bytes..(first + 1) * frame_bytes,
                    k * frame_bytes,
                );
            }
        }
        Ok(Frames {
            shape: [indices.len(), h, w],
            data: want.out,
        })
    }

    fn missing_error(&self, want: &Want, asked: usize) -> DataError {
        let missing: Vec<String> = want.missing.iter().take(8).map(|i| i.to_string()).collect();
        let more = if want.missing.len() > 8 { ", ..." } else { "" };
        let errors = match &self.last_decode_error {
            Some(e) => format!("; {} decode error(s), the last: {e}", self.decode_errors),
            None => String::new(),
        };
        decode_err(
            &self.path,
            format!(
                "decoded {} of {asked} asked frames: frame(s) {}{more} did not decode \
                 (the index lists {} frames{errors})",
                asked - want.missing.len(),
                missing.join(", "),
                self.info.frames
            ),
        )
    }

    /// Random access: for the smallest frame still wanted, go on decoding if the decoder
    /// has already passed its keyframe in this run, else seek to that keyframe.
    ///
    /// NOTE: a decoder can skip a frame after a seek even to a flagged keyframe: FFmpeg's
    /// H.264 decoder started at a non-IDR I-frame (an x264 scenecut keyframe with a recovery
    /// point) can drop the GOP's last frame (the `ffmpeg -ss` CLI does too). So a frame that
    /// a run meant to produce did not come out is tried again from the keyframe before, then
    /// from the first packet; only then is it missing.
    fn decode_seeking(&mut self, want: &mut Want) -> std::result::Result<(), Fail> {
        let mut target = usize::MAX;
        let mut attempts = 0;
        let mut last_start = usize::MAX;
        while let Some(&t) = want.remaining.first() {
            if t != target {
                (target, attempts) = (t, 0);
                self.run.no_seek = false;
            }
            let t_pts = self.index.frame_pts[t];
            let key = self.index.keyframe_for(t);
            let covers = self.run.active
                && (self.run.no_seek || (self.run.started <= key && key < self.run.next));
            let behind = self.run.eof || self.run.last_out.is_some_and(|l| l >= t_pts);
            if covers && !behind {
                self.pump(want)?;
                continue;
            }
            let start = if covers && attempts > 0 {
                // Skipped by a run started for it: start earlier.
                attempts += 1;
                match (attempts, self.index.key_before(last_start)) {
                    (2, Some(earlier)) => earlier,
                    (2 | 3, _) if last_start > 0 => 0,
                    _ => {
                        want.remaining.remove(&t);
                        want.missing.insert(t);
                        continue;
                    }
                }
            } else {
                attempts = 1;
                key
            };
            self.seek_to_packet(start)?;
            self.run.no_seek = attempts > 1;
            last_start = start;
            // Feed the keyframe: the run now covers it.
            self.pump(want)?;
        }
        Ok(())
    }

    /// Seeks so that the next packet read is packet `k` (decode order), flushing the
    /// decoder. The demuxer's seek is only a hint: packets before `k` are read and dropped
    /// without decoding, and a seek that lands after `k` is redone from the start.
    fn seek_to_packet(&mut self, k: usize) -> std::result::Result<(), Fail> {
        self.decoder.flush();
        self.pending = None;
        self.run = Run {
            started: k,
            next: k,
            ..Run::default()
        };
        let ts = self.index.packets[k].seek_ts().unwrap_or(i64::MIN);
        if k == 0 || !self.seek_stream(ts) {
            self.seek_start()?;
        }
        let mut restarted = k == 0;
        loop {
            let Some(pkt) = self.read_stream_packet()? else {
                return Err(Fail::Untrusted(format!(
                    "seeking for packet {k} ran past the end of the file"
                )));
            };
            let d = self.decode_index(&pkt)?;
            if d < k {
                continue;
            }
            if d == k {
                self.pending = Some(pkt);
                self.run.active = true;
                return Ok(());
            }
            if restarted {
                return Err(Fail::Untrusted(format!(
                    "packet {k} not found reading from the start"
                )));
            }
            restarted = true;
            self.seek_start()?;
        }
    }

    /// Which packet of the index this is (seek mode: by its unique pts).
    fn decode_index(&self, pkt: &Packet) -> std::result::Result<usize, Fail> {
        pkt.pts()
            .and_then(|p| self.index.packet_of_pts(p))
            .ok_or_else(|| {
                Fail::Untrusted(format!(
                    "a packet with timestamp {:?} is not in the index",
                    pkt.pts()
                ))
            })
    }

    /// av_seek_frame backwards to `ts` on our stream; false when the demuxer refuses.
    fn seek_stream(&mut self, ts: i64) -> bool {
        // SAFETY: a valid, open format context and one of its stream indices.
        let r = unsafe {
            ffi::avformat_seek_file(
                self.input.as_mut_ptr(),
                self.stream as i32,
                i64::MIN,
                ts,
                ts,
                0,
            )
        };
        if r >= 0 {
            return true;
        }
        // SAFETY: as above.
        let r = unsafe {
            ffi::av_seek_frame(
                self.input.as_mut_ptr(),
                self.stream as i32,
                ts,
                ffi::AVSEEK_FLAG_BACKWARD,
            )
        };
        r >= 0
    }

    /// Back to the first packet: a seek to the first timestamp, checked against the index;
    /// when the demuxer cannot do that, the file is opened again.
    fn seek_start(&mut self) -> std::result::Result<(), Fail> {
        let first = self.index.packets[0];
        let mut ok = first.seek_ts().is_some_and(|ts| self.seek_stream(ts));
        if ok {
            // The first packet read must be packet 0.
            match self.read_stream_packet()? {
                Some(pkt) if first.is(&pkt) => self.pending = Some(pkt),
                _ => ok = false,
            }
        }
        if !ok {
            self.input = open_input(&self.path)?;
            self.pending = None;
        }
        Ok(())
    }

    /// Next packet of our stream: the pending one, else from the demuxer; None at the end
    /// of the file or past the indexed packets.
    fn read_stream_packet(&mut self) -> std::result::Result<Option<Packet>, Fail> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        let mut invalid_in_a_row = 0;
        loop {
            let mut pkt = Packet::empty();
            match pkt.read(&mut self.input) {
                Ok(()) if pkt.stream() == self.stream => return Ok(Some(pkt)),
                Ok(()) => invalid_in_a_row = 0,
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(ffmpeg::Error::InvalidData) if invalid_in_a_row < 64 => invalid_in_a_row += 1,
                // The index pass stopped at the same error: the end of what can be read.
                Err(_) => return Ok(None),
            }
        }
    }

    /// Feeds the next packet (or the end of stream) to the decoder and takes every frame
    /// that comes out.
    fn pump(&mut self, want: &mut Want) -> std::result::Result<(), Fail> {
        let pkt = if self.run.next < self.index.packets.len() {
            self.read_stream_packet()?
        } else {
            None
        };
        match pkt {
            Some(pkt) => {
                if self.info.seekable {
                    let d = self.decode_index(&pkt)?;
                    if d != self.run.next {
                        return Err(Fail::Untrusted(format!(
                            "the demuxer gave packet {d} where the index has packet {}",
                            self.run.next
                        )));
                    }
                }
                self.run.next += 1;
                self.packets_decoded += 1;
                let mut sent = self.decoder.send_packet(&pkt);
                if sent.as_ref().is_err_and(is_again) {
                    // Full: take what is ready, then the packet goes in.
                    self.drain(want)?;
                    sent = self.decoder.send_packet(&pkt);
                }
                if let Err(e) = sent {
                    self.note_decode_error(&e);
                }
            }
            None => {
                let _ = self.decoder.send_eof();
                self.run.eof = true;
            }
        }
        self.drain(want)
    }

    /// Takes every frame the decoder has ready.
    fn drain(&mut self, want: &mut Want) -> std::result::Result<(), Fail> {
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => self.take_frame(want)?,
                Err(e) if is_again(&e) || e == ffmpeg::Error::Eof => return Ok(()),
                Err(e) => {
                    self.note_decode_error(&e);
                    return Ok(());
                }
            }
        }
    }

    fn note_decode_error(&mut self, e: &ffmpeg::Error) {
        self.decode_errors += 1;
        self.last_decode_error = Some(format!("packet {}: {e}", self.run.next.saturating_sub(1)));
    }

    /// Identifies the frame just decoded and converts it if it is wanted.
    fn take_frame(&mut self, want: &mut Want) -> std::result::Result<(), Fail> {
        let index = if self.info.seekable {
            let Some(pts) = self.decoded.pts() else {
                return Err(Fail::Untrusted("a decoded frame has no timestamp".into()));
            };
            let Some(i) = self.index.frame_of_pts(pts) else {
                if self.index.packet_of_pts(pts).is_some() {
                    return Ok(()); // a discarded packet's frame: not one of the video's
                }
                return Err(Fail::Untrusted(format!(
                    "a decoded frame's timestamp {pts} is not in the index"
                )));
            };
            self.run.last_out = Some(pts);
            i
        } else {
            let i = self.run.out_count;
            self.run.out_count += 1;
            self.run.last_out = Some(i as i64);
            i
        };
        if want.remaining.remove(&index) {
            let slot = want.slot[&index];
            let n = want.h * want.w * 3;
            let (h, w) = (want.h, want.w);
            let dst = &mut want.out[slot * n..(slot + 1) * n];
            self.convert(dst, h, w).map_err(Fail::Data)?;
        }
        Ok(())
    }

    /// Sequential decoding from the first packet; frame i is the i-th frame out. A decode
    /// error ends it: after one, counting frames no longer says which frame is which.
    fn decode_sequential(&mut self, want: &mut Want) -> Result<()> {
        let errors_before = self.decode_errors;
        let resume = self.run.active
            && !self.run.eof
            && self.run.started == 0
            && want
                .remaining
                .first()
                .is_some_and(|&t| (t as i64) > self.run.last_out.unwrap_or(-1));
        if !resume {
            self.decoder.flush();
            self.pending = None;
            self.run = Run::default();
            self.seek_start().map_err(|f| self.fail_to_error(f))?;
            self.run.active = true;
        }
        while !want.remaining.is_empty() && !self.run.eof {
            self.pump(want).map_err(|f| self.fail_to_error(f))?;
            if self.decode_errors > errors_before {
                // Frames after a failed packet cannot be numbered: stop here.
                self.run.eof = true;
                break;
            }
        }
        Ok(())
    }

    /// Sequential decoding checks no timestamps, so `Untrusted` cannot come from it; were
    /// it to, it is still an error that names the file rather than a panic.
    fn fail_to_error(&self, f: Fail) -> DataError {
        match f {
            Fail::Data(e) => e,
            Fail::Untrusted(why) => decode_err(&self.path, why),
        }
    }

    /// Converts `self.decoded` into RGB `dst` of h×w with swscale (colour + size at once).
    fn convert(&mut self, dst: &mut [u8], h: usize, w: usize) -> Result<()> {
        let src = &self.decoded;
        let key = (src.format(), src.width(), src.height(), w as u32, h as u32);
        if self.scaler.as_ref().is_none_or(|s| s.key != key) {
            let mut ctx = scaling::Context::get(
                key.0,
                key.1,
                key.2,
                Pixel::RGB24,
                key.3,
                key.4,
                scaling::Flags::BILINEAR,
            )
            .map_err(|e| {
                decode_err(
                    &self.path,
                    format!(
                        "cannot convert {:?} {}x{} frames to RGB: {e}",
                        key.0, key.1, key.2
                    ),
                )
            })?;
            set_colorspace(&mut ctx, src);
            self.scaler = Some(Scaler {
                ctx: SendScaler(ctx),
                key,
            });
            self.rgb = frame::Video::empty();
        }
        let Some(scaler) = self.scaler.as_mut() else {
            return Err(decode_err(&self.path, "no colour converter"));
        };
        scaler
            .ctx
            .0
            .run(&self.decoded, &mut self.rgb)
            .map_err(|e| decode_err(&self.path, format!("colour conversion failed: {e}")))?;
        // swscale's rows are padded to its stride; ours are packed.
        let stride = self.rgb.stride(0);
        let row = w * 3;
        let plane = self.rgb.data(0);
        for y in 0..h {
            dst[y * row..(y + 1) * row].copy_from_slice(&plane[y * stride..y * stride + row]);
        }
        Ok(())
    }
}

fn rate(r: Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0).then(|| f64::from(r))
}

/// Uses the frame's own matrix (BT.709 for HD, ...) and range, as libavfilter's `scale`
/// does with `in_color_matrix=auto`; swscale alone would assume BT.601 for everything.
fn set_colorspace(ctx: &mut scaling::Context, src: &frame::Video) {
    use ffmpeg::color::{Range, Space};
    // SAFETY: the descriptor table is static; the pixel format comes from a decoded frame.
    let is_rgb = unsafe {
        let d = ffi::av_pix_fmt_desc_get(src.format().into());
        d.is_null() || ((*d).flags & ffi::AV_PIX_FMT_FLAG_RGB as u64) != 0
    };
    if is_rgb {
        return;
    }
    let matrix = match src.color_space() {
        Space::BT709 => ffi::SWS_CS_ITU709,
        Space::FCC => ffi::SWS_CS_FCC,
        Space::SMPTE240M => ffi::SWS_CS_SMPTE240M,
        Space::BT2020NCL | Space::BT2020CL => ffi::SWS_CS_BT2020,
        _ => ffi::SWS_CS_DEFAULT,
    };
    // SAFETY: get/set on a live SwsContext; the coefficient tables are static.
    unsafe {
        let raw = ctx.as_mut_ptr();
        let mut inv_table: *mut i32 = std::ptr::null_mut();
        let mut table: *mut i32 = std::ptr::null_mut();
        let (mut src_range, mut dst_range) = (0, 0);
        let (mut brightness, mut contrast, mut saturation) = (0, 0, 0);
        if ffi::sws_getColorspaceDetails(
            raw,
            &mut inv_table,
            &mut src_range,
            &mut table,
            &mut dst_range,
            &mut brightness,
            &mut contrast,
            &mut saturation,
        ) < 0
        {
            return;
        }
        // Keep swscale's guess (full range for yuvj formats) unless the frame says.
        match src.color_range() {
            Range::JPEG => src_range = 1,
            Range::MPEG => src_range = 0,
            _ => {}
        }
        ffi::sws_setColorspaceDetails(
            raw,
            ffi::sws_getCoefficients(matrix),
            src_range,
            table,
            dst_range,
            brightness,
            contrast,
            saturation,
        );
    }
}
