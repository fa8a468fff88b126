//! The embedded synthetic set (tubelet_data::synthetic) as the zoo's tests use it: deterministic
//! clips, distinct splits, and a class that no single frame shows.

use tubelet_data::synthetic::{MovingShapes, Split, NUM_CLASSES};

#[test]
fn synthetic_clips_are_deterministic_and_splits_differ() {
    let d = MovingShapes::new(8, 32, 3);
    let (a, la) = d.clip(Split::Train, 5);
    let (b, lb) = d.clip(Split::Train, 5);
    assert_eq!(a, b);
    assert_eq!(la, lb);
    assert_eq!(a.len(), 8 * 32 * 32 * 3);
    let (c, _) = d.clip(Split::Test, 5);
    assert_ne!(a, c);
    // Every class occurs in a few hundred clips.
    let mut seen = [0usize; NUM_CLASSES];
    for i in 0..400 {
        seen[d.clip(Split::Train, i).1 as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n > 20), "{seen:?}");
}

#[test]
fn synthetic_motion_is_not_visible_in_one_frame() {
    // The class is the motion: the first frame of a clip must change with time (the shape moves,
    // turns or scales), i.e. frames differ.
    let d = MovingShapes::new(8, 32, 1);
    let (clip, _) = d.clip(Split::Train, 0);
    let frame = 32 * 32 * 3;
    let diff: f32 = clip[..frame]
        .iter()
        .zip(&clip[7 * frame..])
        .map(|(a, b)| (a - b).abs())
        .sum();
    assert!(
        diff > 10.0,
        "first and last frames are nearly identical ({diff})"
    );
}
