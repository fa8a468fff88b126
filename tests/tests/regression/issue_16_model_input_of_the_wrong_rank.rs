//! Issue 16: `ViViT::forward` read the input's batch dimension before checking its rank, so a
//! scalar input panicked instead of failing. (`models/inputs.rs` feeds every preset every kind of
//! wrong input.)

use tubelet::{gpu_or_skip, Tensor};
use tubelet_models::vivit::{Config, ViViT};

#[test]
fn vivit_fed_a_scalar_returns_an_error_naming_the_shape() {
    let Some(_) = gpu_or_skip() else { return };
    let model = ViViT::new(
        Config {
            layers: 1,
            ..Config::tiny(8)
        },
        0,
    )
    .unwrap();
    let scalar = Tensor::from_slice(&[1.0], &[]).unwrap();
    let err = model.forward(&scalar).unwrap_err().to_string();
    assert!(err.contains("ViViT") && err.contains("[]"), "{err}");
}
