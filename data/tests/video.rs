//! Video decoding and encoding on real files made here: by `VideoWriter` and by the `ffmpeg` CLI
//! fed raw frames that stamp their own index (big black/white blocks, one bit each, which
//! survive lossy coding and resizing). Checks exact frame indices through B-frames, open GOPs,
//! a non-zero start time, a variable frame rate, odd sizes and untrusted timestamps; that random
//! access returns what sequential decoding returns without decoding the whole video; and that
//! every bad file is an error naming the file and the reason.
//!
//! Run: `cargo test -p tubelet-data --features video --test video`. Without the feature only
//! `without_video_feature_*` runs. The measurement for the report is `#[ignore]`d:
//! `cargo test -p tubelet-data --features video --release --test video -- --ignored --nocapture`.
//! Counterparts: data/src/video.rs, data/src/video/reader.rs, data/src/encode.rs.

#[cfg(not(feature = "video"))]
#[test]
fn without_video_feature_open_and_create_say_how_to_get_video() {
    use std::path::Path;
    use tubelet_data::encode::{Codec, VideoWriter};
    use tubelet_data::video::VideoReader;
    use tubelet_data::DataError;
    let p = Path::new("clips/a.mp4");
    let Err(e) = VideoReader::open(p) else {
        panic!("opened a video without video support")
    };
    assert!(matches!(e, DataError::NoVideoSupport { .. }), "{e}");
    assert!(e.to_string().contains("clips/a.mp4") && e.to_string().contains("--features video"));
    let Err(e) = VideoWriter::create(p, Codec::H264, 64, 48, 25) else {
        panic!("created a video")
    };
    assert!(matches!(e, DataError::NoVideoSupport { .. }), "{e}");
}

#[cfg(feature = "video")]
mod with_video {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    use tubelet_data::encode::{Codec, VideoWriter};
    use tubelet_data::video::VideoReader;
    use tubelet_data::{DataError, Frames};

    const COLS: usize = 4;
    const ROWS: usize = 2; // 8 bits: frame indices up to 255

    /// A fresh, empty folder for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tubelet-video-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Frame `i`, h×w RGB: bit b of i is block (b % COLS, b / COLS), white for 1, black for 0.
    fn stamp(i: usize, h: usize, w: usize) -> Vec<u8> {
        let mut f = vec![0u8; h * w * 3];
        for y in 0..h {
            for x in 0..w {
                let b = (y * ROWS / h) * COLS + x * COLS / w;
                if (i >> b) & 1 == 1 {
                    f[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(255);
                }
            }
        }
        f
    }

    /// The index stamped in an h×w RGB frame: the mean of each block's central half.
    fn read_stamp(f: &[u8], h: usize, w: usize) -> usize {
        let mut i = 0;
        for b in 0..COLS * ROWS {
            let (c, r) = (b % COLS, b / COLS);
            let (x0, x1) = (c * w / COLS, (c + 1) * w / COLS);
            let (y0, y1) = (r * h / ROWS, (r + 1) * h / ROWS);
            let (qx, qy) = ((x1 - x0) / 4, (y1 - y0) / 4);
            let (mut sum, mut n) = (0usize, 0usize);
            for y in y0 + qy..y1 - qy {
                for x in x0 + qx..x1 - qx {
                    sum += f[(y * w + x) * 3..(y * w + x) * 3 + 3]
                        .iter()
                        .map(|&v| v as usize)
                        .sum::<usize>();
                    n += 3;
                }
            }
            if sum > 128 * n {
                i |= 1 << b;
            }
        }
        i
    }

    fn stamps(frames: &Frames) -> Vec<usize> {
        let [t, h, w] = frames.shape;
        (0..t).map(|k| read_stamp(frames.frame(k), h, w)).collect()
    }

    /// The `ffmpeg` CLI, or None (the test skips) when it is missing; with
    /// TUBELET_REQUIRE_GPU=1 (CI) a missing CLI is a failure, as a missing GPU is.
    fn ffmpeg_cli() -> Option<&'static str> {
        let ok = Command::new("ffmpeg")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some("ffmpeg");
        }
        if std::env::var("TUBELET_REQUIRE_GPU").as_deref() == Ok("1") {
            panic!(
                "the `ffmpeg` CLI is not installed; the video tests make their clips with it \
                 (Debian/Ubuntu: apt-get install ffmpeg)"
            );
        }
        eprintln!("SKIPPED (no ffmpeg CLI)");
        None
    }

    /// Encodes `n` stamped h×w frames at 25 fps with the ffmpeg CLI and `args` (codec options),
    /// into `out`. None when there is no CLI.
    fn cli_clip(out: &Path, h: usize, w: usize, n: usize, args: &[&str]) -> Option<PathBuf> {
        let ffmpeg = ffmpeg_cli()?;
        let size = format!("{w}x{h}");
        let mut child = Command::new(ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo"])
            .args(["-pix_fmt", "rgb24", "-s", &size, "-r", "25", "-i", "-"])
            .args(args)
            .arg(out)
            .stdin(Stdio::piped())
            .spawn()
            .expect("start ffmpeg");
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..n {
            stdin.write_all(&stamp(i, h, w)).unwrap();
        }
        drop(stdin);
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "ffmpeg {args:?} -> {} failed",
            out.display()
        );
        Some(out.to_path_buf())
    }

    /// Runs the ffmpeg CLI quietly, overwriting: `args` then the output `out`.
    fn ffmpeg_run(ffmpeg: &str, args: &[&str], out: &Path) {
        let ok = Command::new(ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .arg(out)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ffmpeg {args:?} {} failed", out.display());
    }

    /// Writes `n` stamped frames with our own encoder.
    fn writer_clip(out: &Path, codec: Codec, h: usize, w: usize, n: usize, gop: u32) -> PathBuf {
        let mut vw = VideoWriter::create_with_gop(out, codec, w, h, 25, gop).unwrap();
        for i in 0..n {
            vw.write(&stamp(i, h, w)).unwrap();
        }
        vw.finish().unwrap();
        out.to_path_buf()
    }

    /// A fixed pseudo-random order of indices below `n` with repeats (xorshift, seeded).
    fn scrambled(n: usize, count: usize, mut seed: u64) -> Vec<usize> {
        (0..count)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n as u64) as usize
            })
            .collect()
    }

    /// The checks every good clip passes: the index count, exact stamps when decoding all
    /// frames, random access (scrambled, repeated, reversed, one sparse clip) equal to the
    /// full decode byte for byte, and a sparse request that decodes far less than the video.
    fn check_clip(path: &Path, n: usize, h: usize, w: usize, gop: usize) -> VideoReader {
        let mut r = VideoReader::open(path).unwrap_or_else(|e| panic!("{e}"));
        let info = r.info().clone();
        assert_eq!(
            (info.frames, info.height, info.width),
            (n, h, w),
            "{info:?}"
        );
        let all: Vec<usize> = (0..n).collect();
        let full = r.get_frames(&all, None).unwrap();
        assert_eq!(full.shape, [n, h, w]);
        assert_eq!(
            stamps(&full),
            all,
            "{}: stamps of a full decode",
            path.display()
        );

        // A fresh reader, so nothing is left from the full decode.
        let mut r = VideoReader::open(path).unwrap();
        let mut orders = vec![
            scrambled(n, 24, 0x9e37_79b9_7f4a_7c15),
            all.iter().rev().copied().collect(),
            vec![n - 1, 0, n / 2, n / 2, n - 1, 1],
            (n / 3..n).step_by(2).take(8).collect(),
        ];
        orders.push(scrambled(n, 5, 7));
        for idx in &orders {
            let got = r.get_frames(idx, None).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(stamps(&got), *idx, "{}: stamps of {idx:?}", path.display());
            for (k, &i) in idx.iter().enumerate() {
                assert!(
                    got.frame(k) == full.frame(i),
                    "{}: frame {i} differs from sequential",
                    path.display()
                );
            }
        }

        // Two frames near the end: decoding starts at their keyframe, not at frame 0.
        let mut r = VideoReader::open(path).unwrap();
        let late = [n - 3, n - 1];
        let got = r.get_frames(&late, None).unwrap();
        assert_eq!(stamps(&got), late);
        if r.info().seekable {
            let bound = gop + 8;
            assert!(
                r.packets_decoded() <= bound,
                "{}: {} packets decoded for 2 frames (GOP {gop})",
                path.display(),
                r.packets_decoded()
            );
        }
        r
    }

    #[test]
    fn h264_b_frames_mp4_exact_indices() {
        let dir = scratch("h264");
        let Some(p) = cli_clip(
            &dir.join("bf.mp4"),
            48,
            64,
            100,
            &[
                "-c:v", "libx264", "-bf", "2", "-g", "12", "-pix_fmt", "yuv420p",
            ],
        ) else {
            return;
        };
        let r = check_clip(&p, 100, 48, 64, 12);
        let info = r.info();
        assert_eq!(info.codec, "h264");
        assert!(info.seekable, "{:?}", r.sequential_reason());
        assert!(
            (info.fps - 25.0).abs() < 1e-6 && (info.duration_s - 4.0).abs() < 0.05,
            "{info:?}"
        );
    }

    #[test]
    fn h264_non_zero_start_time_and_open_gop() {
        let dir = scratch("offset");
        let Some(p) = cli_clip(
            &dir.join("offset.mp4"),
            48,
            64,
            90,
            &[
                "-c:v",
                "libx264",
                "-bf",
                "3",
                "-g",
                "15",
                "-output_ts_offset",
                "1.5",
            ],
        ) else {
            return;
        };
        let r = check_clip(&p, 90, 48, 64, 15);
        assert!(r.info().seekable, "{:?}", r.sequential_reason());
        // Open GOPs: leading B-frames after an I-frame reference the GOP before it.
        let Some(p) = cli_clip(
            &dir.join("open.mkv"),
            48,
            64,
            90,
            &[
                "-c:v",
                "libx264",
                "-bf",
                "3",
                "-x264-params",
                "keyint=15:min-keyint=15:open-gop=1:scenecut=0",
            ],
        ) else {
            return;
        };
        let r = check_clip(&p, 90, 48, 64, 15);
        assert!(r.info().seekable, "{:?}", r.sequential_reason());
    }

    #[test]
    fn hevc_open_gop_and_audio_stream_exact_indices() {
        let dir = scratch("hevc");
        // x265 makes open GOPs (CRA keyframes whose leading pictures need the GOP before).
        let x265 = "keyint=12:min-keyint=12:bframes=3:open-gop=1:scenecut=0:log-level=none";
        let args = ["-c:v", "libx265", "-x265-params", x265, "-tag:v", "hvc1"];
        let Some(p) = cli_clip(&dir.join("open.mp4"), 48, 64, 72, &args) else {
            return;
        };
        let r = check_clip(&p, 72, 48, 64, 12);
        assert_eq!(r.info().codec, "hevc");
        // An audio stream interleaved with the video: its packets are skipped, not counted.
        let args = [
            "-f",
            "lavfi",
            "-i",
            "sine=duration=3",
            "-c:v",
            "libx264",
            "-g",
            "10",
        ];
        let args = [&args[..], &["-bf", "2", "-c:a", "aac", "-shortest"]].concat();
        let Some(p) = cli_clip(&dir.join("av.mp4"), 48, 64, 60, &args) else {
            return;
        };
        check_clip(&p, 60, 48, 64, 10);
    }

    #[test]
    fn decoder_threads_give_the_same_frames() {
        let dir = scratch("threads");
        let p = writer_clip(&dir.join("t.mp4"), Codec::H264, 48, 64, 50, 10);
        let idx = scrambled(50, 20, 3);
        let one = VideoReader::open(&p)
            .unwrap()
            .get_frames(&idx, None)
            .unwrap();
        // NOTE: global; other tests running now may also get 3 threads, which must not change
        // their results either.
        tubelet_data::video::set_decoder_threads(3);
        let three = VideoReader::open(&p);
        tubelet_data::video::set_decoder_threads(1);
        let three = three.unwrap().get_frames(&idx, None).unwrap();
        assert!(one == three, "3 decoder threads gave other frames than 1");
        assert_eq!(stamps(&three), idx);
    }

    #[test]
    fn vp9_webm_exact_indices() {
        let dir = scratch("vp9");
        let Some(p) = cli_clip(
            &dir.join("a.webm"),
            48,
            64,
            60,
            &[
                "-c:v",
                "libvpx-vp9",
                "-g",
                "10",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-crf",
                "20",
                "-b:v",
                "0",
            ],
        ) else {
            return;
        };
        let r = check_clip(&p, 60, 48, 64, 10);
        assert_eq!(r.info().codec, "vp9");
    }

    #[test]
    fn mjpeg_avi_odd_size_exact_indices() {
        let dir = scratch("mjpeg");
        let Some(p) = cli_clip(
            &dir.join("odd.avi"),
            17,
            33,
            40,
            &["-c:v", "mjpeg", "-q:v", "2"],
        ) else {
            return;
        };
        let r = check_clip(&p, 40, 17, 33, 1);
        assert_eq!(r.info().codec, "mjpeg");
    }

    #[test]
    fn variable_frame_rate_exact_indices() {
        let dir = scratch("vfr");
        // Every tenth frame is followed by a 100 ms gap; passthrough keeps every frame.
        let vf = "setpts=N/(25*TB)+floor(N/10)*0.1/TB";
        let Some(p) = cli_clip(
            &dir.join("vfr.mkv"),
            48,
            64,
            60,
            &[
                "-vf",
                vf,
                "-fps_mode",
                "passthrough",
                "-c:v",
                "libx264",
                "-bf",
                "2",
                "-g",
                "12",
            ],
        ) else {
            return;
        };
        let r = check_clip(&p, 60, 48, 64, 12);
        assert!(r.info().seekable, "{:?}", r.sequential_reason());
    }

    #[test]
    fn raw_h264_without_timestamps_decodes_sequentially() {
        let dir = scratch("raw");
        let Some(p) = cli_clip(
            &dir.join("raw.h264"),
            48,
            64,
            50,
            &["-c:v", "libx264", "-bf", "2", "-g", "12", "-f", "h264"],
        ) else {
            return;
        };
        let mut r = VideoReader::open(&p).unwrap();
        assert!(!r.info().seekable);
        assert!(r.sequential_reason().is_some());
        let idx = [49, 3, 17, 17, 0];
        assert_eq!(stamps(&r.get_frames(&idx, None).unwrap()), idx);
        // Onward from where the decoder stands, then backwards (a restart).
        assert_eq!(stamps(&r.get_frames(&[20, 21], None).unwrap()), [20, 21]);
        assert_eq!(stamps(&r.get_frames(&[22, 2], None).unwrap()), [22, 2]);
    }

    #[test]
    fn writer_codecs_round_trip() {
        let dir = scratch("writer");
        for (codec, name, h, w) in [
            (Codec::H264, "a.mp4", 48, 64),
            (Codec::H264, "odd.mp4", 17, 33),
            (Codec::Vp9, "a.webm", 48, 64),
            (Codec::Mjpeg, "a.avi", 17, 33),
            (Codec::Ffv1, "a.mkv", 17, 33),
        ] {
            let p = writer_clip(&dir.join(name), codec, h, w, 40, 10);
            let gop = if matches!(codec, Codec::Mjpeg | Codec::Ffv1) {
                1
            } else {
                10
            };
            let r = check_clip(&p, 40, h, w, gop);
            assert!(r.info().seekable, "{name}: {:?}", r.sequential_reason());
        }
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 5, "no partial files left: {names:?}");
    }

    #[test]
    fn ffv1_is_lossless_and_resize_gives_the_size_asked() {
        let dir = scratch("ffv1");
        let (h, w, n) = (17, 33, 6);
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                scrambled(256, h * w * 3, 1 + i as u64)
                    .into_iter()
                    .map(|v| v as u8)
                    .collect()
            })
            .collect();
        let p = dir.join("noise.mkv");
        let mut vw = VideoWriter::create(&p, Codec::Ffv1, w, h, 25).unwrap();
        for f in &frames {
            vw.write(f).unwrap();
        }
        vw.finish().unwrap();
        let mut r = VideoReader::open(&p).unwrap();
        let got = r.get_frames(&[5, 0, 3], None).unwrap();
        for (k, i) in [5, 0, 3].into_iter().enumerate() {
            assert!(got.frame(k) == frames[i], "frame {i} is not bit-exact");
        }

        // Resizing (bilinear, in the same swscale pass): the size asked, stamps still readable.
        let Some(p) = cli_clip(
            &dir.join("s.mp4"),
            48,
            64,
            30,
            &["-c:v", "libx264", "-g", "8"],
        ) else {
            return;
        };
        let mut r = VideoReader::open(&p).unwrap();
        for size in [[24, 40], [97, 31], [48, 64]] {
            let got = r.get_frames(&[29, 4, 11], Some(size)).unwrap();
            assert_eq!(got.shape, [3, size[0], size[1]]);
            assert_eq!(got.data.len(), 3 * size[0] * size[1] * 3);
            assert_eq!(stamps(&got), [29, 4, 11], "at {size:?}");
        }
        let e = must_fail(r.get_frames(&[0], Some([0, 10])), "a 0x10 frame");
        assert!(e.to_string().contains("0x10"), "{e}");
        assert_eq!(r.get_frames(&[], Some([5, 6])).unwrap().shape, [0, 5, 6]);
    }

    /// Colour conversion and resizing match FFmpeg's own (`-sws_flags bilinear`, the CLI's
    /// rgb24 output) byte for byte, on a colourful B-frame clip, native and resized, whole
    /// and by random access.
    #[test]
    fn rgb_equals_the_ffmpeg_cli_byte_for_byte() {
        let dir = scratch("cli");
        let Some(ffmpeg) = ffmpeg_cli() else { return };
        let p = dir.join("colour.mp4");
        let src = "testsrc2=size=96x64:rate=25:duration=1.2";
        let args = [
            "-f", "lavfi", "-i", src, "-c:v", "libx264", "-bf", "2", "-g", "10",
        ];
        ffmpeg_run(ffmpeg, &args, &p);
        for (size, scale) in [(None, "scale=96:64"), (Some([40, 56]), "scale=56:40")] {
            let raw = dir.join("frames.rgb");
            let input = p.to_str().unwrap();
            let args = ["-i", input, "-sws_flags", "bilinear", "-vf", scale];
            ffmpeg_run(
                ffmpeg,
                &[&args[..], &["-pix_fmt", "rgb24", "-f", "rawvideo"]].concat(),
                &raw,
            );
            let cli = std::fs::read(&raw).unwrap();
            let mut r = VideoReader::open(&p).unwrap();
            let n = r.info().frames;
            assert_eq!(n, 30);
            let all = r.get_frames(&(0..n).collect::<Vec<_>>(), size).unwrap();
            assert!(all.data == cli, "{scale}: our RGB differs from FFmpeg's");
            let bytes = all.data.len() / n;
            let idx = scrambled(n, 12, 11);
            let some = VideoReader::open(&p)
                .unwrap()
                .get_frames(&idx, size)
                .unwrap();
            for (k, &i) in idx.iter().enumerate() {
                assert!(
                    some.frame(k) == &cli[i * bytes..(i + 1) * bytes],
                    "{scale}: frame {i}"
                );
            }
        }
    }

    #[test]
    fn frame_past_the_end_is_an_error_naming_the_count() {
        let dir = scratch("past");
        let p = writer_clip(&dir.join("a.avi"), Codec::Mjpeg, 16, 16, 10, 1);
        let mut r = VideoReader::open(&p).unwrap();
        let e = must_fail(r.get_frames(&[3, 10], None), "frame 10 of 10 decoded");
        let m = e.to_string();
        assert!(
            m.contains("a.avi") && m.contains("frame 10") && m.contains("10 frames"),
            "{m}"
        );
    }

    /// The error of a request that must fail (`expect_err` would print every pixel).
    fn must_fail(r: tubelet_data::Result<Frames>, why: &str) -> DataError {
        match r {
            Ok(f) => panic!("{why}: got frames {:?}", f.shape),
            Err(e) => e,
        }
    }

    fn assert_bad(path: &Path, words: &[&str]) -> DataError {
        let e = match VideoReader::open(path) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(e) => e,
        };
        let m = e.to_string();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(m.contains(name), "message does not name the file: {m}");
        for w in words {
            assert!(m.contains(w), "message lacks {w:?}: {m}");
        }
        e
    }

    #[test]
    fn bad_files_are_errors_that_name_file_and_reason() {
        let dir = scratch("bad");
        let missing = dir.join("missing.mp4");
        assert!(matches!(assert_bad(&missing, &[]), DataError::Io { .. }));

        let empty = dir.join("empty.mp4");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            assert_bad(&empty, &["empty", "0 bytes"]),
            DataError::Decode { .. }
        ));

        let text = dir.join("notes.mp4");
        std::fs::write(&text, "label,path\nwalking,a.mp4\n".repeat(40)).unwrap();
        assert!(matches!(
            assert_bad(&text, &["not a video"]),
            DataError::Decode { .. }
        ));

        let Some(ffmpeg) = ffmpeg_cli() else { return };
        let audio = dir.join("tone.wav");
        ffmpeg_run(
            ffmpeg,
            &["-f", "lavfi", "-i", "sine=frequency=440:duration=1"],
            &audio,
        );
        assert_bad(&audio, &["no video stream", "Audio"]);

        // mp4 with its index (moov) at the end, cut in half: the index is gone.
        let good = cli_clip(&dir.join("good.mp4"), 48, 64, 50, &["-c:v", "libx264"]).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.join("cut.mp4");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        assert_bad(&cut, &["not a video"]);
    }

    #[test]
    fn truncated_file_with_index_first_gives_the_frames_it_has() {
        // moov first (+faststart), then cut: the header promises 60 frames, fewer exist.
        let dir = scratch("trunc");
        let Some(good) = cli_clip(
            &dir.join("good.mp4"),
            48,
            64,
            60,
            &["-c:v", "libx264", "-g", "10", "-movflags", "+faststart"],
        ) else {
            return;
        };
        let bytes = std::fs::read(&good).unwrap();
        let p = dir.join("trunc.mp4");
        std::fs::write(&p, &bytes[..bytes.len() * 6 / 10]).unwrap();
        let mut r = VideoReader::open(&p).unwrap_or_else(|e| panic!("{e}"));
        let n = r.info().frames;
        assert_eq!(r.header_frames(), Some(60));
        assert!(n > 5 && n < 60, "index found {n} frames");
        // What the index lists decodes, exactly; what it doesn't is an error, never padding.
        let all: Vec<usize> = (0..n).collect();
        match r.get_frames(&all, None) {
            Ok(f) => assert_eq!(stamps(&f), all),
            Err(e) => assert!(
                e.to_string().contains("trunc.mp4") && e.to_string().contains("did not decode"),
                "{e}"
            ),
        }
        let e = must_fail(r.get_frames(&[n], None), "a frame past the index");
        assert!(
            e.to_string().contains(&format!("the video has {n} frames")),
            "{e}"
        );
    }

    #[test]
    fn file_that_stops_decoding_partway_says_how_many_decoded() {
        // MJPEG in AVI, every frame a JPEG: wipe the JPEG headers of frames 20..40. The
        // container still lists 40 frames; only 20 decode.
        let dir = scratch("partway");
        let p = writer_clip(&dir.join("broken.avi"), Codec::Mjpeg, 48, 64, 40, 1);
        let mut bytes = std::fs::read(&p).unwrap();
        let soi: Vec<usize> = (0..bytes.len() - 3)
            .filter(|&i| bytes[i..i + 3] == [0xff, 0xd8, 0xff])
            .collect();
        assert_eq!(soi.len(), 40, "one JPEG per frame");
        let idx1 = (0..bytes.len() - 4)
            .rev()
            .find(|&i| &bytes[i..i + 4] == b"idx1")
            .unwrap();
        for k in 20..40 {
            // The JPEG up to the next frame's chunk header (8 bytes: id, size), or the index.
            let end = if k + 1 < 40 { soi[k + 1] - 8 } else { idx1 };
            bytes[soi[k]..end].fill(0);
        }
        std::fs::write(&p, &bytes).unwrap();
        let mut r = VideoReader::open(&p).unwrap();
        assert_eq!(r.info().frames, 40);
        assert_eq!(
            stamps(&r.get_frames(&[19, 0, 7], None).unwrap()),
            [19, 0, 7]
        );
        let e = must_fail(
            r.get_frames(&[5, 25, 30, 30], None),
            "frames 25, 30 decoded",
        );
        let m = e.to_string();
        assert!(
            m.contains("broken.avi") && m.contains("decoded 1 of 3 asked frames"),
            "{m}"
        );
        assert!(m.contains("25, 30"), "{m}");
        // The reader is still usable afterwards.
        assert_eq!(stamps(&r.get_frames(&[10], None).unwrap()), [10]);
    }

    #[test]
    fn writer_rejects_bad_input_with_clear_errors() {
        let dir = scratch("werr");
        let e = VideoWriter::create(&dir.join("a.xyz123"), Codec::H264, 64, 48, 25)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("a.xyz123") && e.to_string().contains("extension"),
            "{e}"
        );
        let e = VideoWriter::create(&dir.join("a.webm"), Codec::Mjpeg, 64, 48, 25)
            .err()
            .unwrap();
        assert!(e.to_string().contains("cannot hold"), "{e}");
        let mut vw = VideoWriter::create(&dir.join("b.mp4"), Codec::H264, 64, 48, 25).unwrap();
        let e = vw.write(&[0; 10]).unwrap_err();
        assert!(
            e.to_string().contains("b.mp4") && e.to_string().contains("10 bytes"),
            "{e}"
        );
        drop(vw);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "an unfinished file stays hidden"
        );
    }

    /// The report's measurement: 32 frames at interval 2 from a 10 s 320p H.264 file,
    /// random access against decoding sequentially up to the last frame wanted.
    #[test]
    #[ignore = "measurement: prints timings"]
    fn measure_random_access_vs_sequential() {
        use std::time::Instant;
        let dir = scratch("measure");
        let Some(ffmpeg) = ffmpeg_cli() else { return };
        for (name, gop) in [("keyint250.mp4", "250"), ("keyint25.mp4", "25")] {
            let p = dir.join(name);
            let src = "testsrc2=size=568x320:rate=25:duration=10";
            let args = ["-f", "lavfi", "-i", src, "-c:v", "libx264", "-g", gop];
            ffmpeg_run(ffmpeg, &[&args[..], &["-pix_fmt", "yuv420p"]].concat(), &p);
            for start in [0usize, 100, 180] {
                let idx: Vec<usize> = (0..32).map(|k| start + 2 * k).collect();
                let time = |seq: bool| {
                    let mut best = f64::MAX;
                    let mut packets = 0;
                    for _ in 0..3 {
                        let mut r = VideoReader::open(&p).unwrap();
                        let t = Instant::now();
                        if seq {
                            r.decode_sequentially();
                        }
                        r.get_frames(&idx, Some([224, 224])).unwrap();
                        best = best.min(t.elapsed().as_secs_f64());
                        packets = r.packets_decoded();
                    }
                    (best * 1e3, packets)
                };
                if start == 0 {
                    let t = Instant::now();
                    let r = VideoReader::open(&p).unwrap();
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    println!("{name}: open + index {ms:.1} ms, {:?}", r.info());
                }
                let (ra, ra_p) = time(false);
                let (sq, sq_p) = time(true);
                println!(
                    "{name} frames {start}..{}: random access {ra:.1} ms ({ra_p} packets), \
                     sequential {sq:.1} ms ({sq_p} packets)",
                    idx.last().unwrap()
                );
            }
        }
    }
}
