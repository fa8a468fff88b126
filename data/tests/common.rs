//! Helpers shared by the tests: scratch folders and small rawframes sets.

use std::path::{Path, PathBuf};

use tubelet_data::synth::{write_set, Format, SynthOptions, Written};

/// A fresh, empty scratch folder under the system temp dir, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let p =
            std::env::temp_dir().join(format!("tubelet-data-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the synthetic set as JPEG rawframes: `train` clips of [T, H, W] = `clip`, 4 val clips.
pub fn rawframes_set(dir: &Path, train: usize, clip: [usize; 3]) -> Written {
    let opt = SynthOptions {
        format: Format::Rawframes,
        train_clips: train,
        val_clips: 4,
        clip,
        seed: 3,
        fps: 25.0,
    };
    write_set(dir, &opt).expect("write rawframes set")
}
