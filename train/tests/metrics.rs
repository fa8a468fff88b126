//! Evaluation metrics on hand-made scores: top-k, mean class accuracy, confusion, view averaging.

use tubelet_train::metrics::{average_views, softmax, Tally, ViewAverage};
use tubelet_train::optim::ParamPolicy;

#[test]
fn top1_top5_and_mean_class_accuracy() {
    // 3 videos, 6 classes.
    let scores = [
        0.9, 0.1, 0.0, 0.0, 0.0, 0.0, // pred 0, label 0: top-1 hit
        0.1, 0.2, 0.3, 0.4, 0.5,
        0.6, // pred 5, label 0: rank of class 0 is 6th → top-5 miss
        0.0, 0.5, 0.4, 0.3, 0.2, 0.1, // pred 1, label 4: 5th → top-5 hit
    ];
    let mut t = Tally::new(6);
    t.add(&scores, &[0, 0, 4]).unwrap();
    assert_eq!((t.count, t.top1, t.top5), (3, 1, 2));
    assert!((t.top1() - 1.0 / 3.0).abs() < 1e-12);
    // Class 0: 1 of 2; class 4: 0 of 1; absent classes do not count.
    assert!((t.mean_class_accuracy() - 0.25).abs() < 1e-12);
    assert_eq!(t.confusion[5], 1); // label 0 predicted 5
    assert_eq!(t.confusion[4 * 6 + 1], 1);
    let csv = t.per_class_csv(None);
    assert!(
        csv.starts_with("class,name,videos,correct,accuracy\n0,,2,1,0.500000\n"),
        "{csv}"
    );
    assert!(t.add(&scores[..6], &[7]).is_err());
    assert!(t.add(&scores, &[0]).is_err());
}

#[test]
fn views_averaged_as_probabilities_or_scores() {
    // One video, three views, 2 classes: mean scores tie (2/3, 2/3), mean probabilities pick
    // class 1 (one confident view for class 0, two for class 1).
    let s = [10.0f32, 0.0, -4.0, 1.0, -4.0, 1.0];
    let prob = average_views(&s, 2, 3, ViewAverage::Prob).unwrap();
    let score = average_views(&s, 2, 3, ViewAverage::Score).unwrap();
    let (pa, pb) = (softmax(&[10.0, 0.0]), softmax(&[-4.0, 1.0]));
    for c in 0..2 {
        assert!((prob[c] - (pa[c] + 2.0 * pb[c]) / 3.0).abs() < 1e-6);
    }
    assert!((score[0] - 2.0 / 3.0).abs() < 1e-6 && (score[1] - 2.0 / 3.0).abs() < 1e-6);
    assert!(
        prob[1] > prob[0],
        "mean probability picks class 1: {prob:?}"
    );
    assert!(average_views(&s, 2, 4, ViewAverage::Prob).is_err());
}

#[test]
fn parameter_policies_as_the_official_configs() {
    let swin = ParamPolicy::Keys(vec![
        ("absolute_pos_embed".into(), 1.0, 0.0),
        ("relative_position_bias_table".into(), 1.0, 0.0),
        ("norm".into(), 1.0, 0.0),
        ("backbone".into(), 0.1, 1.0),
    ]);
    assert_eq!(
        swin.rule("backbone.layers.0.blocks.0.norm1.weight", 1),
        (0.1, 0.0)
    );
    assert_eq!(
        swin.rule(
            "backbone.layers.0.blocks.0.attn.relative_position_bias_table",
            2
        ),
        (0.1, 0.0)
    );
    assert_eq!(
        swin.rule("backbone.layers.0.blocks.0.attn.qkv.bias", 1),
        (0.1, 1.0)
    );
    assert_eq!(swin.rule("cls_head.fc_cls.weight", 2), (1.0, 1.0));
    let tsm = ParamPolicy::Tsm;
    assert_eq!(tsm.rule("new_fc.weight", 2), (5.0, 1.0));
    assert_eq!(tsm.rule("new_fc.bias", 1), (10.0, 0.0));
    assert_eq!(tsm.rule("base_model.bn1.weight", 1), (1.0, 0.0));
    assert_eq!(tsm.rule("base_model.conv1.weight", 4), (1.0, 1.0));
    let sf = ParamPolicy::ZeroWd1d {
        skip: vec!["pos_embed".into()],
    };
    assert_eq!(sf.rule("blocks.0.mlp.fc1.bias", 1), (1.0, 0.0));
    assert_eq!(sf.rule("pos_embed", 3), (1.0, 0.0));
    assert_eq!(sf.rule("blocks.0.mlp.fc1.weight", 2), (1.0, 1.0));
}
