//! Every tiny preset fed inputs it cannot take: the wrong rank (0, 1, one less, one more), the
//! wrong channel count, an empty batch, a zero-sized frame and a clip of the wrong size. Each
//! must be an `Error` that names the shape it got, never a panic (issue 16: `ViViT::forward`
//! indexed the input's dimensions before checking its rank).

use tubelet::{gpu_or_skip, Tensor};
use tubelet_models::{InputLayout, VideoModel};

/// Zeros of `shape` (any rank, empty included), uploaded without running a kernel.
fn zeros(shape: &[usize]) -> Tensor {
    Tensor::from_slice(&vec![0.0; shape.iter().product()], shape).unwrap()
}

/// The inputs a model of `layout` and `clip` cannot take, each with what is wrong with it.
fn bad_inputs(layout: InputLayout, [t, h, w]: [usize; 3]) -> Vec<(&'static str, Vec<usize>)> {
    let good = layout.shape(2, [t, h, w]);
    let channel = if layout == InputLayout::Bthwc {
        good.len() - 1
    } else {
        1
    };
    let mut four = good.clone();
    four[channel] = 4;
    let mut less = good.clone();
    less.pop();
    let mut more = good.clone();
    more.push(1);
    vec![
        ("rank 0", vec![]),
        ("rank 1", vec![good.iter().product()]),
        ("one dimension less", less),
        ("one dimension more", more),
        ("4 channels", four),
        ("an empty batch", layout.shape(0, [t, h, w])),
        ("a frame of height 0", layout.shape(2, [t, 0, w])),
        ("no frames", layout.shape(2, [0, h, w])),
    ]
}

#[test]
fn every_tiny_preset_refuses_inputs_of_the_wrong_shape_with_an_error_naming_it() {
    let Some(_) = gpu_or_skip() else { return };
    for p in tubelet_models::presets().into_iter().filter(|p| p.tiny) {
        let model = tubelet_models::build(p.name, &tubelet_models::BuildOptions::seed(0)).unwrap();
        let (layout, clip) = (model.input_layout(), model.clip());
        for (what, shape) in bad_inputs(layout, clip) {
            for train in [false, true] {
                let err = model
                    .forward(&zeros(&shape), train)
                    .err()
                    .unwrap_or_else(|| {
                        panic!("{}: {what} {shape:?} (train {train}) was accepted", p.name)
                    })
                    .to_string();
                assert!(
                    err.contains(&format!("{shape:?}")),
                    "{}: {what}: the error does not name {shape:?}: {err}",
                    p.name
                );
            }
        }
    }
}

/// A clip one pixel taller than the preset's: models with a fixed token grid (position
/// embeddings, a fixed grid of tubelets) must refuse it with its shape; a model that pads any
/// size to its patches and windows (Video Swin) must classify it.
#[test]
fn every_tiny_preset_refuses_or_pads_a_clip_of_another_size() {
    let Some(_) = gpu_or_skip() else { return };
    for p in tubelet_models::presets().into_iter().filter(|p| p.tiny) {
        let model: Box<dyn VideoModel> =
            tubelet_models::build(p.name, &tubelet_models::BuildOptions::seed(0)).unwrap();
        let [t, h, w] = model.clip();
        let shape = model.input_layout().shape(1, [t, h + 1, w]);
        match model.forward(&zeros(&shape), false) {
            Err(e) => assert!(
                e.to_string().contains(&format!("{shape:?}")),
                "{}: {e}",
                p.name
            ),
            Ok(y) => {
                assert!(
                    p.name.starts_with("swin"),
                    "{}: a clip of shape {shape:?} was accepted",
                    p.name
                );
                assert_eq!(y.shape(), [1, model.num_classes()], "{}", p.name);
            }
        }
    }
}
