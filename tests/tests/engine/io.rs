//! Checkpoints: atomic save, load by key with prefixes stripped, and the error that lists
//! missing, unexpected and wrongly shaped keys.

use tubelet::{gpu_or_skip, io, Tensor};

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tubelet-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn save_then_load_round_trips_and_strips_prefixes() {
    let Some(_) = gpu_or_skip() else { return };
    let a = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let b = Tensor::from_slice(&[7.0], &[1]).unwrap();
    let path = tmp("roundtrip.safetensors");
    io::save(
        &path,
        &[
            ("backbone.fc.weight".into(), a),
            ("backbone.fc.bias".into(), b),
        ],
        None,
    )
    .unwrap();
    assert!(
        !path.with_extension("safetensors.tmp").exists(),
        "temporary file left behind"
    );
    let a2 = Tensor::zeros(&[2, 3]);
    let b2 = Tensor::zeros(&[1]);
    io::load_into(
        &path,
        &[
            ("fc.weight".into(), a2.clone()),
            ("fc.bias".into(), b2.clone()),
        ],
        true,
    )
    .unwrap();
    assert_eq!(a2.to_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(b2.to_vec().unwrap(), vec![7.0]);
}

#[test]
fn load_lists_missing_unexpected_and_misshaped_keys() {
    let Some(_) = gpu_or_skip() else { return };
    let path = tmp("mismatch.safetensors");
    io::save(
        &path,
        &[
            ("fc.weight".into(), Tensor::zeros(&[2, 3])),
            ("extra.bias".into(), Tensor::zeros(&[4])),
        ],
        None,
    )
    .unwrap();
    let err = io::load_into(
        &path,
        &[
            ("fc.weight".into(), Tensor::zeros(&[3, 2])),
            ("head.bias".into(), Tensor::zeros(&[4])),
        ],
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing keys (1): head.bias"), "{err}");
    assert!(err.contains("unexpected keys (1): extra.bias"), "{err}");
    assert!(
        err.contains("fc.weight: file [2, 3], model [3, 2]"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_safetensors_is_a_clear_error() {
    let path = tmp("garbage.safetensors");
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let err = io::read(&path).unwrap_err().to_string();
    assert!(err.contains("not a valid safetensors file"), "{err}");
    let err = io::read(&tmp("does-not-exist.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does-not-exist"), "{err}");
}
