//! Presets built at a chosen class count, clip size and drop path (tubelet_models::BuildOptions);
//! sizes a model cannot take are errors that name the field.

use tubelet::gpu_or_skip;
use tubelet_models::{build, BuildOptions};

#[test]
fn presets_build_at_a_chosen_class_count_and_clip() {
    let err = |name: &str, o: BuildOptions| {
        build(name, &o)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let o = |classes: Option<usize>, clip: Option<[usize; 3]>| BuildOptions {
        num_classes: classes,
        clip,
        ..BuildOptions::seed(0)
    };
    assert!(err("vivit-tiny", o(None, Some([8, 30, 32])))
        .contains("clip 8×30×32 is not a multiple of the tubelet"));
    assert!(err("mvit-tiny", o(None, Some([8, 32, 48]))).contains("square"));
    assert!(err("vivit-tiny", o(Some(0), None)).contains("num_classes"));
    assert!(err("tsm-tiny", o(None, Some([8, 16, 16]))).contains("at least 32×32"));
    let dp = BuildOptions {
        drop_path: Some(0.1),
        ..BuildOptions::seed(0)
    };
    assert!(err("vivit-tiny", dp).contains("drop_path 0.1"));
    let Some(_) = gpu_or_skip() else { return };
    for name in [
        "vivit-tiny",
        "swin-tiny",
        "tsm-tiny",
        "uniformer-tiny",
        "timesformer-tiny",
        "mvitv2-tiny",
    ] {
        let m =
            build(name, &o(Some(5), Some([4, 32, 32]))).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((m.num_classes(), m.clip()), (5, [4, 32, 32]), "{name}");
    }
    let p = tubelet_models::presets()
        .into_iter()
        .find(|p| p.name == "swin-t")
        .unwrap();
    assert_eq!(p.num_classes, 400);
}
