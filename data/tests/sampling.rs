//! Sampling and crop boxes against mmaction2's own code: `fixtures/mmaction2.json`, written by
//! `fixtures/gen_mmaction2.py` (mmaction2 4d6c934) with a replayable sequence of random draws
//! that [`Replay`] reproduces here, so training-mode branches are checked exactly too.

use serde_json::Value;
use tubelet_data::sampling::{sample_frames, segment_frames, uniform_sample, Draw};
use tubelet_data::transform::{center_crop, multi_scale_crop, random_resized_crop, three_crop};
use tubelet_data::Mode;

/// The fixture script's draws: the k-th scalar draw is `low + (7k + 3) % (high − low)` for an
/// integer, `((37k + 11) % 100) / 100` for a uniform.
struct Replay(usize);

impl Replay {
    fn next(&mut self) -> usize {
        self.0 += 1;
        self.0 - 1
    }
}

impl Draw for Replay {
    fn randint(&mut self, low: usize, high: usize) -> usize {
        low + (7 * self.next() + 3) % (high - low)
    }
    fn uniform(&mut self) -> f64 {
        ((37 * self.next() + 11) % 100) as f64 / 100.0
    }
}

fn fixture() -> Value {
    let text = include_str!("fixtures/mmaction2.json");
    serde_json::from_str(text).expect("fixture parses")
}

fn u(v: &Value) -> usize {
    v.as_u64().expect("unsigned") as usize
}

fn list(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("int"))
        .collect()
}

fn mode(c: &Value) -> Mode {
    if c["test"].as_bool().unwrap() {
        Mode::Test
    } else {
        Mode::Train
    }
}

#[test]
fn sample_frames_matches_mmaction2() {
    let f = fixture();
    assert_eq!(
        f["mmaction2_commit"],
        "4d6c93474730cad2f25e51109adcf96824efc7a3"
    );
    for c in f["sample_frames"].as_array().unwrap() {
        let mut rng = Replay(u(&c["start"]));
        let got = sample_frames(
            u(&c["total"]),
            u(&c["clip_len"]),
            u(&c["interval"]),
            u(&c["num_clips"]),
            mode(c),
            &mut rng,
        );
        assert!(got.iter().all(|v| v.len() == u(&c["clip_len"])));
        let got: Vec<i64> = got.into_iter().flatten().map(|i| i as i64).collect();
        assert_eq!(got, list(&c["inds"]), "SampleFrames case {c}");
    }
}

#[test]
fn segments_are_sample_frames_of_one_frame() {
    let f = fixture();
    let c = f["sample_frames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clip_len"] == 1 && c["total"] == 10 && c["test"] == true)
        .unwrap();
    let got: Vec<i64> = segment_frames(10, 8, Mode::Test, &mut Replay(0))
        .into_iter()
        .map(|i| i as i64)
        .collect();
    assert_eq!(got, list(&c["inds"]));
}

#[test]
fn uniform_sample_matches_mmaction2() {
    for c in fixture()["uniform_sample"].as_array().unwrap() {
        let mut rng = Replay(u(&c["start"]));
        let got = uniform_sample(
            u(&c["total"]),
            u(&c["clip_len"]),
            u(&c["num_clips"]),
            mode(c),
            &mut rng,
        );
        let got: Vec<i64> = got.into_iter().flatten().map(|i| i as i64).collect();
        assert_eq!(got, list(&c["inds"]), "UniformSample case {c}");
    }
}

#[test]
fn crop_boxes_match_mmaction2() {
    for c in fixture()["crops"].as_array().unwrap() {
        let (h, w) = (u(&c["h"]), u(&c["w"]));
        let size = || [u(&c["size"][0]), u(&c["size"][1])];
        match c["kind"].as_str().unwrap() {
            "multi_scale" => {
                let b = multi_scale_crop(
                    h,
                    w,
                    size(),
                    &[1.0, 0.875, 0.75, 0.66],
                    1,
                    u(&c["fixed"]),
                    &mut Replay(u(&c["start"])),
                );
                assert_eq!(b.to_vec(), list(&c["box"]), "MultiScaleCrop {c}");
            }
            "random_resized" => {
                let f = |v: &Value| [v[0].as_f64().unwrap(), v[1].as_f64().unwrap()];
                let b = random_resized_crop(
                    h,
                    w,
                    f(&c["area"]),
                    f(&c["aspect"]),
                    &mut Replay(u(&c["start"])),
                );
                assert_eq!(b.to_vec(), list(&c["box"]), "RandomResizedCrop {c}");
            }
            "center" => {
                assert_eq!(
                    center_crop(h, w, size()).to_vec(),
                    list(&c["box"]),
                    "CenterCrop {c}"
                )
            }
            "three" => {
                let got: Vec<Vec<i64>> = three_crop(h, w, size())
                    .unwrap()
                    .iter()
                    .map(|b| b.to_vec())
                    .collect();
                let want: Vec<Vec<i64>> = c["boxes"].as_array().unwrap().iter().map(list).collect();
                assert_eq!(got, want, "ThreeCrop {c}");
            }
            k => panic!("unknown crop kind {k}"),
        }
    }
}

#[test]
fn sampled_indices_stay_in_range_for_any_length() {
    let mut rng = tubelet::Rng::new(1);
    for total in 1..80 {
        for m in [Mode::Train, Mode::Test] {
            for v in sample_frames(total, 8, 3, 2, m, &mut rng)
                .into_iter()
                .chain(uniform_sample(total, 6, 2, m, &mut rng))
            {
                assert!(v.iter().all(|&i| i < total), "total {total} {m:?}: {v:?}");
            }
        }
    }
}
