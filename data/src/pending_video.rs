//! Placeholder for the video branch's `video.rs` and `encode.rs` (FFmpeg through `ffmpeg-next`),
//! holding exactly their agreed API as a build without the `video` feature has it: opening a
//! video or creating an encoder returns [`DataError::NoVideoSupport`]. The merge deletes this
//! file (see lib.rs); nothing else changes, because every caller already uses that API.

pub mod video {
    use std::path::Path;

    use crate::{DataError, Frames, Result};

    /// What indexing a video found out.
    #[derive(Clone, Debug)]
    pub struct VideoInfo {
        pub frames: usize,
        pub width: usize,
        pub height: usize,
        pub fps: f64,
        pub codec: String,
        pub duration_s: f64,
        pub seekable: bool,
    }

    /// Random access to a video's frames (indexes packets once, seeks to keyframes).
    pub struct VideoReader {
        info: VideoInfo,
    }

    impl VideoReader {
        pub fn open(path: &Path) -> Result<VideoReader> {
            Err(DataError::NoVideoSupport { path: path.to_path_buf() })
        }

        pub fn info(&self) -> &VideoInfo {
            &self.info
        }

        /// Frames `indices` (0-based), RGB, resized to `size` = [h, w] when given.
        pub fn get_frames(
            &mut self,
            _indices: &[usize],
            _size: Option<[usize; 2]>,
        ) -> Result<Frames> {
            Err(DataError::Config("video support is not built in".into()))
        }
    }
}

pub mod encode {
    use std::path::Path;

    use crate::{DataError, Result};

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Codec {
        H264,
        Vp9,
        Mjpeg,
    }

    /// Writes RGB frames as an encoded video.
    pub struct VideoWriter {
        _private: (),
    }

    impl VideoWriter {
        pub fn create(
            path: &Path,
            _codec: Codec,
            _width: usize,
            _height: usize,
            _fps: f64,
        ) -> Result<VideoWriter> {
            Err(DataError::NoVideoSupport { path: path.to_path_buf() })
        }

        /// Appends one RGB frame (H·W·3 bytes).
        pub fn write(&mut self, _rgb: &[u8]) -> Result<()> {
            Ok(())
        }

        pub fn finish(self) -> Result<()> {
            Ok(())
        }
    }
}
