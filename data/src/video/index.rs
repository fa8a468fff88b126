//! The index of a video stream: one demuxing pass over every packet, nothing decoded. It gives
//! the frame count the file really has, frame order (frame i = the i-th smallest presentation
//! timestamp), the keyframes to seek to, and whether the timestamps can be trusted at all.
//!
//! Counterpart: `reader.rs` seeks with it and names each decoded frame by its timestamp.
//! NOTE: ~40 bytes a packet (a 10-minute 30 fps video: under 1 MB).

use std::collections::HashMap;

use ffmpeg::{format, Packet};
use ffmpeg_next as ffmpeg;

/// One packet of the video stream, in decode order, as the index saw it.
#[derive(Clone, Copy, Debug)]
pub(super) struct PacketInfo {
    pub pts: Option<i64>,
    pub dts: Option<i64>,
    pub key: bool,
    /// The demuxer says: decode this (it may be a reference) but do not show it (e.g. a
    /// frame an mp4 edit list cuts away). It is not one of the video's frames.
    pub discard: bool,
    /// The demuxer says the packet is damaged (e.g. cut short at the end of the file).
    pub corrupt: bool,
    pub pos: i64,
    pub size: usize,
}

impl PacketInfo {
    fn of(pkt: &Packet) -> PacketInfo {
        // NOTE: ffmpeg-next's `Flags` drops the bits it has no name for, DISCARD among them.
        // SAFETY: reads a field of a packet we own.
        let flags = unsafe { (*ffmpeg::packet::Ref::as_ptr(pkt)).flags };
        PacketInfo {
            pts: pkt.pts(),
            dts: pkt.dts(),
            key: pkt.is_key(),
            discard: flags & ffmpeg::ffi::AV_PKT_FLAG_DISCARD != 0,
            corrupt: pkt.is_corrupt(),
            pos: pkt.position() as i64,
            size: pkt.size(),
        }
    }

    /// The timestamp to seek to for this packet: the demuxer indexes by dts (mp4) or pts
    /// (matroska); the smaller of the two never lands after the packet.
    pub fn seek_ts(&self) -> Option<i64> {
        match (self.dts, self.pts) {
            (Some(d), Some(p)) => Some(d.min(p)),
            (d, p) => d.or(p),
        }
    }

    /// Whether a packet read after a seek is this one (by file position, else timestamps).
    pub fn is(&self, pkt: &Packet) -> bool {
        let pos = pkt.position() as i64;
        if pos >= 0 && self.pos >= 0 {
            return pos == self.pos && pkt.size() == self.size;
        }
        pkt.pts() == self.pts && pkt.dts() == self.dts && pkt.size() == self.size
    }
}

pub(super) struct Index {
    /// Every packet of the stream, decode order.
    pub packets: Vec<PacketInfo>,
    /// Frame i (presentation order) -> its packet's decode index.
    pub frame_packet: Vec<usize>,
    /// Frame i -> its pts, ascending (seekable only).
    pub frame_pts: Vec<i64>,
    /// Decode indices of keyframe packets, ascending.
    pub keys: Vec<usize>,
    /// pts -> decode index of every packet (seekable only).
    by_pts: HashMap<i64, usize>,
    /// Why the timestamps cannot be trusted; None when they can.
    pub untrusted: Option<String>,
    /// The read error that ended the demuxing pass before the end of the file, if any.
    pub stop: Option<String>,
}

impl Index {
    /// Demuxes every packet of `stream`, decoding none.
    pub fn read(input: &mut format::context::Input, stream: usize) -> Index {
        let mut packets = Vec::new();
        let mut invalid_in_a_row = 0;
        let mut stop = None;
        loop {
            let mut pkt = Packet::empty();
            match pkt.read(input) {
                Ok(()) => {
                    invalid_in_a_row = 0;
                    if pkt.stream() == stream {
                        packets.push(PacketInfo::of(&pkt));
                    }
                }
                Err(ffmpeg::Error::Eof) => break,
                // A demuxer can resync past one bad packet; many in a row means garbage.
                Err(ffmpeg::Error::InvalidData) if invalid_in_a_row < 64 => invalid_in_a_row += 1,
                Err(e) => {
                    stop = Some(e.to_string());
                    break;
                }
            }
        }
        // A truncated file ends with packets cut short (empty, or flagged corrupt by the
        // demuxer): they would decode to garbage, so they are not frames of the video.
        while packets
            .last()
            .is_some_and(|p: &PacketInfo| p.size == 0 || p.corrupt)
        {
            packets.pop();
        }
        let mut index = Index {
            packets,
            frame_packet: Vec::new(),
            frame_pts: Vec::new(),
            keys: Vec::new(),
            by_pts: HashMap::new(),
            untrusted: None,
            stop,
        };
        index.untrusted = index.check_timestamps().err();
        index.build();
        index
    }

    pub fn frames(&self) -> usize {
        self.frame_packet.len()
    }

    pub fn seekable(&self) -> bool {
        self.untrusted.is_none()
    }

    /// From now on frames are numbered in decode output order, not by timestamp.
    pub fn set_untrusted(&mut self, why: String) {
        self.untrusted = Some(why);
        self.build();
    }

    /// Ok when frame order and seeking can rest on the timestamps: every packet has a pts,
    /// none negative (FFmpeg shifts those), none repeated, and dts never goes backwards.
    fn check_timestamps(&self) -> Result<(), String> {
        let mut seen = HashMap::with_capacity(self.packets.len());
        let mut last_dts: Option<i64> = None;
        for (i, p) in self.packets.iter().enumerate() {
            let Some(pts) = p.pts else {
                return Err(format!("packet {i} has no presentation timestamp"));
            };
            if pts < 0 && !p.discard {
                return Err(format!("packet {i} has a negative timestamp ({pts})"));
            }
            if seen.insert(pts, i).is_some() {
                return Err(format!("two packets share the timestamp {pts}"));
            }
            if let (Some(d), Some(l)) = (p.dts, last_dts) {
                if d <= l {
                    return Err(format!("decode timestamps go backwards at packet {i}"));
                }
            }
            last_dts = p.dts.or(last_dts);
        }
        Ok(())
    }

    /// Presentation order, keyframes and the pts lookup.
    fn build(&mut self) {
        let n = self.packets.len();
        self.keys = (0..n).filter(|&i| self.packets[i].key).collect();
        let mut shown: Vec<usize> = (0..n).filter(|&i| !self.packets[i].discard).collect();
        self.frame_pts.clear();
        self.by_pts.clear();
        if self.seekable() {
            shown.sort_by_key(|&i| self.packets[i].pts);
            self.frame_pts = shown
                .iter()
                .map(|&i| self.packets[i].pts.unwrap_or(0))
                .collect();
            let pts = self.packets.iter().map(|p| p.pts.unwrap_or(0));
            self.by_pts = pts.enumerate().map(|(i, p)| (p, i)).collect();
        }
        self.frame_packet = shown;
    }

    /// Decode index of the packet with this pts.
    pub fn packet_of_pts(&self, pts: i64) -> Option<usize> {
        self.by_pts.get(&pts).copied()
    }

    /// Frame index of a decoded frame's pts.
    pub fn frame_of_pts(&self, pts: i64) -> Option<usize> {
        self.frame_pts.binary_search(&pts).ok()
    }

    /// Decode index of the keyframe to start from for frame `t`: the last key packet at or
    /// before t's packet in decode order whose pts is not after t's. The pts condition
    /// matters for open GOPs: a leading picture follows its keyframe in decode order but is
    /// shown before it and needs the previous GOP.
    pub fn keyframe_for(&self, t: usize) -> usize {
        let d = self.frame_packet[t];
        let t_pts = self.frame_pts[t];
        let mut k = self.keys.partition_point(|&key| key <= d);
        while k > 0 {
            let key = self.keys[k - 1];
            if self.packets[key].pts.is_some_and(|p| p <= t_pts) {
                return key;
            }
            k -= 1;
        }
        0
    }

    /// The keyframe before decode index `k`, if there is one.
    pub fn key_before(&self, k: usize) -> Option<usize> {
        let i = self.keys.partition_point(|&key| key < k);
        (i > 0).then(|| self.keys[i - 1])
    }

    /// Seconds from the first frame to the end of the last (one mean frame period added), or
    /// the stream's own duration when timestamps are not trusted.
    pub fn duration_s(&self, time_base: f64, stream_duration: i64) -> f64 {
        let n = self.frame_pts.len();
        if self.seekable() && n > 1 {
            let span = (self.frame_pts[n - 1] - self.frame_pts[0]) as f64 * time_base;
            return span + span / (n - 1) as f64;
        }
        if stream_duration > 0 {
            return stream_duration as f64 * time_base;
        }
        0.0
    }
}
