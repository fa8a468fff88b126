//! The one-pass resample (crop + resize + flip + normalise) and mmcv's short-side resize.

use tubelet_data::spec::{Normalize, PixelScale};
use tubelet_data::transform::{resample_clip, short_side_size, CropBox};
use tubelet_data::Frames;

/// Two 3×4 frames whose bytes encode (t, y, x, c).
fn frames() -> Frames {
    let mut f = Frames::with_capacity(2, 3, 4);
    for t in 0..2 {
        let frame: Vec<u8> = (0..3 * 4 * 3).map(|i| (t * 100 + i) as u8).collect();
        f.push(&frame);
    }
    f
}

const RAW: Normalize = Normalize {
    mean: [0.0; 3],
    std: [1.0; 3],
    scale: PixelScale::Byte,
};

#[test]
fn identity_crop_returns_the_pixels_and_flip_mirrors_them() {
    let f = frames();
    let full = CropBox {
        x: 0.0,
        y: 0.0,
        w: 4.0,
        h: 3.0,
    };
    let out = resample_clip(&f, &[1, 0], full, [3, 4], false, &RAW);
    let want: Vec<f32> = f
        .frame(1)
        .iter()
        .chain(f.frame(0))
        .map(|&b| b as f32)
        .collect();
    assert_eq!(out, want, "frames in the asked order, unchanged");
    let flipped = resample_clip(&f, &[0], full, [3, 4], true, &RAW);
    for y in 0..3 {
        for x in 0..4 {
            for c in 0..3 {
                assert_eq!(
                    flipped[(y * 4 + x) * 3 + c],
                    f.frame(0)[(y * 4 + 3 - x) * 3 + c] as f32
                );
            }
        }
    }
    // A 2×2 crop at (1, 1) of frame 0.
    let crop = resample_clip(
        &f,
        &[0],
        CropBox {
            x: 1.0,
            y: 1.0,
            w: 2.0,
            h: 2.0,
        },
        [2, 2],
        false,
        &RAW,
    );
    let px = |y: usize, x: usize, c: usize| f.frame(0)[(y * 4 + x) * 3 + c] as f32;
    assert_eq!(crop[..3], [px(1, 1, 0), px(1, 1, 1), px(1, 1, 2)]);
    assert_eq!(crop[9..], [px(2, 2, 0), px(2, 2, 1), px(2, 2, 2)]);
}

#[test]
fn downscale_by_two_averages_pixel_pairs() {
    // OpenCV's half-pixel convention: output pixel 0 of a 2× downscale samples at 0.5.
    let mut f = Frames::with_capacity(1, 1, 4);
    f.push(&[0, 0, 0, 10, 10, 10, 20, 20, 20, 40, 40, 40]);
    let out = resample_clip(
        &f,
        &[0],
        CropBox {
            x: 0.0,
            y: 0.0,
            w: 4.0,
            h: 1.0,
        },
        [1, 2],
        false,
        &RAW,
    );
    assert_eq!(out, vec![5.0, 5.0, 5.0, 30.0, 30.0, 30.0]);
}

#[test]
fn normalisation_in_both_scales() {
    let mut f = Frames::with_capacity(1, 1, 1);
    f.push(&[255, 0, 128]);
    let one = CropBox {
        x: 0.0,
        y: 0.0,
        w: 1.0,
        h: 1.0,
    };
    let v = resample_clip(&f, &[0], one, [1, 1], false, &Normalize::IMAGENET_255);
    let want = [
        (255.0 - 123.675) / 58.395,
        (0.0 - 116.28) / 57.12,
        (128.0 - 103.53) / 57.375,
    ];
    for (a, b) in v.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{v:?} vs {want:?}");
    }
    let v = resample_clip(&f, &[0], one, [1, 1], false, &Normalize::SYMMETRIC_UNIT);
    assert!(
        (v[0] - 1.0).abs() < 1e-6
            && (v[1] + 1.0).abs() < 1e-6
            && (v[2] - (128.0 / 127.5 - 1.0)).abs() < 1e-6
    );
}

#[test]
fn short_side_resize_follows_mmcv_rescale_size() {
    // factor = S / min(h, w); side = int(side·factor + 0.5).
    assert_eq!(short_side_size(240, 320, 256), (256, 341));
    assert_eq!(short_side_size(320, 240, 256), (341, 256));
    assert_eq!(short_side_size(360, 640, 224), (224, 398));
    assert_eq!(short_side_size(100, 100, 32), (32, 32));
}

#[test]
fn presets_declare_their_papers_protocols() {
    use tubelet_data::{Mode, Pipeline};
    let swin = Pipeline::video_swin_32x2(224);
    assert_eq!(
        (swin.clip(), swin.views(Mode::Train), swin.views(Mode::Test)),
        ([32, 224, 224], 1, 12)
    );
    let tsm = Pipeline::tsm_8(224);
    assert_eq!(
        (tsm.clip(), tsm.views(Mode::Train), tsm.views(Mode::Test)),
        ([8, 224, 224], 1, 1)
    );
    let mvit = Pipeline::mvit_16x4(224);
    assert_eq!((mvit.clip(), mvit.views(Mode::Test)), ([16, 224, 224], 5));
    for p in [swin, tsm, mvit, Pipeline::simple(8, 1, [32, 32])] {
        p.validate().unwrap();
    }
    let mut bad = Pipeline::simple(0, 1, [32, 32]);
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("at least 1"));
    bad = Pipeline::tsm_8(224);
    bad.train_crop = tubelet_data::TrainCrop::MultiScale {
        scales: vec![1.0],
        max_gap: 1,
        fixed_crops: 7,
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("fixed_crops 7"));
}
