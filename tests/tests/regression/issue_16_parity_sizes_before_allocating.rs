//! Issue 16: `tubelet parity` allocated before checking sizes: `mlp_ratio` 1e30 overflowed a
//! capacity (a panic) and `window_size` [50, 50, 50] asked the host for 62 GB (an abort). Both
//! are errors that name the size.

use std::collections::BTreeMap;

use serde_json::json;
use tubelet::gpu_or_skip;
use tubelet::io::HostTensor;
use tubelet_cli::parity;

fn input(shape: &[usize]) -> BTreeMap<String, HostTensor> {
    let data = vec![0.0; shape.iter().product()];
    BTreeMap::from([(
        "input".to_string(),
        HostTensor {
            shape: shape.to_vec(),
            data,
        },
    )])
}

#[test]
fn parity_refuses_an_mlp_ratio_of_1e30() {
    let Some(_) = gpu_or_skip() else { return };
    // dim 8 · 1e30 saturates to usize::MAX hidden units: the fc1 weight's element count overflows.
    let config = json!({"dim": 8, "num_heads": 2, "mlp_ratio": 1e30, "B": 1, "T": 2, "W": 2});
    let err = parity::run_tensors("timesformer.Block", &config, &input(&[1, 5, 8]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("[{}, 8]", usize::MAX))
            && err.contains("more elements than any memory holds"),
        "{err}"
    );
}

#[test]
fn parity_refuses_a_window_of_50_cubed_before_building_its_index() {
    let Some(_) = gpu_or_skip() else { return };
    let config = json!({"dim": 8, "depth": 1, "num_heads": 2, "window_size": [50, 50, 50], "qkv_bias": true});
    let err = parity::run_tensors("video_swin.BasicLayer", &config, &input(&[1, 8, 2, 2, 2]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[50, 50, 50]") && err.contains("max_storage_buffer_binding_size"),
        "{err}"
    );
}
