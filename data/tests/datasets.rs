//! Annotation lists, file-name templates, folder per class, and bad data: every bad-file case
//! that rawframes can make is skipped with its reason and counted; too many stop the epoch.

use std::path::Path;

use tubelet_data::check::scan;
use tubelet_data::dataset::{parse_list, Template};
use tubelet_data::spec::{DataSpec, Mode, Pipeline, Source};
use tubelet_data::{open, write_class_list, DataError, Loader, LoaderConfig};

use crate::common::{rawframes_set, Scratch};

fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
}

#[test]
fn malformed_annotation_lines_name_file_and_line() {
    let dir = Scratch::new("ann");
    let list = dir.path().join("list.txt");
    let cases: [(&str, bool, usize, &str); 6] = [
        (
            "a.mp4 1\nb.mp4\n",
            false,
            2,
            "expected `path label`, got 1 fields",
        ),
        (
            "a.mp4 1\n\nb.mp4 x\n",
            false,
            3,
            "label \"x\" is not a non-negative integer",
        ),
        ("a.mp4 -1\n", false, 1, "label \"-1\""),
        ("a 10 1\nb ten 2\n", true, 2, "total_frames \"ten\""),
        (
            "a 10 1 extra\n",
            true,
            1,
            "expected `frame_dir total_frames label`, got 4 fields",
        ),
        ("a.mp4 1\n", true, 1, "got 2 fields"),
    ];
    for (text, raw, line, msg) in cases {
        write(&list, text);
        let e = parse_list(&list, None, raw).unwrap_err();
        match &e {
            DataError::Annotation { line: l, .. } => assert_eq!(*l, line, "{e}"),
            other => panic!("not an annotation error: {other}"),
        }
        let s = e.to_string();
        assert!(
            s.starts_with(&format!("{}:{line}: ", list.display())) && s.contains(msg),
            "{s}"
        );
    }
    write(&list, "\n\n");
    assert!(parse_list(&list, None, false)
        .unwrap_err()
        .to_string()
        .contains("no entries"));
    let missing = dir.path().join("nope.txt");
    assert!(parse_list(&missing, None, false)
        .unwrap_err()
        .to_string()
        .contains("nope.txt"));
    // Through open(): the same error, and labels over a declared class count are refused.
    write(&list, "a.mp4 1\nb.mp4 7\n");
    let mut spec = DataSpec::new(Source::VideoList(list.clone()));
    let ok = open(&spec, &Pipeline::simple(4, 1, [8, 8]), Mode::Train).unwrap();
    assert_eq!((ok.len(), ok.num_classes(), ok.label(1)), (2, 8, 7));
    assert_eq!(
        ok.describe(0),
        dir.path().join("a.mp4").display().to_string(),
        "paths under the list's folder"
    );
    spec.root = Some("/data/k400".into());
    assert_eq!(
        open(&spec, &Pipeline::simple(4, 1, [8, 8]), Mode::Train)
            .unwrap()
            .describe(1),
        "/data/k400/b.mp4"
    );
    spec.num_classes = Some(5);
    let e = open(&spec, &Pipeline::simple(4, 1, [8, 8]), Mode::Train)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("label 7") && e.contains("5 classes"), "{e}");
}

#[test]
fn templates_follow_python_format() {
    let t = |s: &str, n| Template::parse(s).unwrap().format(n);
    assert_eq!(t("img_{:05}.jpg", 1), "img_00001.jpg");
    assert_eq!(t("{:06d}.png", 42), "000042.png");
    assert_eq!(t("frame{}.jpg", 7), "frame7.jpg");
    assert_eq!(t("x_{:d}.jpg", 123), "x_123.jpg");
    for bad in [
        "img.jpg",
        "{:x5}.jpg",
        "{:5}.jpg",
        "{}{}.jpg",
        "img_{:05.jpg",
    ] {
        assert!(Template::parse(bad).is_err(), "{bad} should be refused");
    }
}

/// Writes `n` PNG frames of `h`×`w` named by `name(i)` into `dir`.
fn png_frames(dir: &Path, n: usize, h: u32, w: u32, name: impl Fn(usize) -> String) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(i * 40) as u8, (x * 9) as u8, (y * 9) as u8])
        });
        img.save(dir.join(name(i))).unwrap();
    }
}

#[test]
fn folder_per_class_with_template_and_start_index() {
    let dir = Scratch::new("folders");
    let root = dir.path().join("data");
    // Classes sort by name, not by creation order; hidden entries are ignored.
    for (class, clips) in [("walk", 2), ("run", 1), ("jump", 3)] {
        for c in 0..clips {
            png_frames(&root.join(class).join(format!("v{c}")), 5, 12, 16, |i| {
                format!("f{i}.png")
            });
        }
    }
    std::fs::create_dir_all(root.join(".cache")).unwrap();
    let mut spec = DataSpec::new(Source::FolderPerClass(root.clone()));
    spec.template = "f{}.png".into();
    spec.start_index = 0;
    let ds = open(&spec, &Pipeline::simple(4, 1, [8, 8]), Mode::Train).unwrap();
    let names = ds.class_names().unwrap();
    assert_eq!(names, ["jump", "run", "walk"]);
    assert_eq!(ds.len(), 6);
    let labels: Vec<u32> = (0..6).map(|i| ds.label(i)).collect();
    assert_eq!(labels, [0, 0, 0, 1, 2, 2]);
    assert_eq!(ds.load(4, 0, 0).unwrap()[0].len(), 4 * 8 * 8 * 3);
    let classes = dir.path().join("classes.txt");
    write_class_list(&classes, &names).unwrap();
    assert_eq!(
        std::fs::read_to_string(&classes).unwrap(),
        "jump\nrun\nwalk\n"
    );
    // The same frames through a rawframes list (frame count from the list).
    write(&dir.path().join("list.txt"), "data/run/v0 5 1\n");
    let mut spec = DataSpec::new(Source::RawframesList(dir.path().join("list.txt")));
    spec.template = "f{}.png".into();
    spec.start_index = 0;
    let a = open(&spec, &Pipeline::simple(4, 1, [8, 8]), Mode::Test)
        .unwrap()
        .load(0, 0, 0)
        .unwrap();
    let b = open(
        &DataSpec {
            source: Source::FolderPerClass(root),
            ..spec.clone()
        },
        &Pipeline::simple(4, 1, [8, 8]),
        Mode::Test,
    )
    .unwrap()
    .load(3, 0, 0)
    .unwrap();
    assert_eq!(a, b);
    // Start index 1 with the same frames misses f5.png.
    spec.start_index = 1;
    let e = open(&spec, &Pipeline::simple(5, 1, [8, 8]), Mode::Test)
        .unwrap()
        .load(0, 0, 0)
        .unwrap_err();
    assert!(
        e.is_bad_file()
            && e.to_string().contains("f5.png")
            && e.to_string().contains("missing frame file"),
        "{e}"
    );
}

/// Breaks items 1–6 of a rawframes set of `n` six-frame clips, one way each.
fn broken_set(dir: &Path, n: usize) -> std::path::PathBuf {
    let w = rawframes_set(dir, n, [6, 16, 16]);
    let clip = |i: usize| dir.join(format!("train/clip_{i:05}"));
    std::fs::remove_file(clip(1).join("img_00004.jpg")).unwrap(); // a missing frame
    write(&clip(2).join("img_00002.jpg"), ""); // a zero-byte frame
    std::fs::write(
        clip(3).join("img_00006.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .unwrap(); // corrupt
    std::fs::remove_dir_all(clip(4)).unwrap(); // the whole folder gone
    image::RgbImage::new(20, 16)
        .save(clip(5).join("img_00003.jpg"))
        .unwrap(); // another size (JPEG by extension)
                   // Item 6: the list promises more frames than the folder has.
    let list = std::fs::read_to_string(&w.train_list)
        .unwrap()
        .replace("train/clip_00006 6", "train/clip_00006 9");
    write(&w.train_list, &list);
    w.train_list
}

#[test]
fn bad_files_are_skipped_with_reasons_and_counted() {
    let dir = Scratch::new("bad");
    let list = broken_set(dir.path(), 40);
    let p = Pipeline::simple(6, 1, [8, 8]);
    let ds = open(
        &DataSpec::new(Source::RawframesList(list.clone())),
        &p,
        Mode::Train,
    )
    .unwrap();
    let cfg = LoaderConfig {
        batch: 4,
        workers: 2,
        shuffle: false,
        max_bad_fraction: 0.2,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(ds, cfg.clone()).unwrap();
    let batches: Vec<_> = loader.epoch(0, 0).map(|b| b.unwrap()).collect();
    let items: usize = batches.iter().map(|b| b.labels.len()).sum();
    assert_eq!(items, 34);
    assert_eq!(
        batches[0].labels.len(),
        1,
        "items 1–3 of the first batch skipped"
    );
    assert_eq!(batches[0].shape[0], 1);
    let skipped: Vec<(String, String)> = batches.iter().flat_map(|b| b.skipped.clone()).collect();
    let bad = loader.bad_files();
    assert_eq!(skipped, bad);
    let reasons: Vec<(&str, &str)> = vec![
        ("clip_00001", "img_00004.jpg: missing frame file"),
        ("clip_00002", "img_00002.jpg: empty file (0 bytes)"),
        ("clip_00003", "img_00006.jpg: cannot decode image"),
        ("clip_00004", "img_00001.jpg: missing frame file"),
        (
            "clip_00005",
            "img_00003.jpg: is 20×16, the clip's first frame is 16×16",
        ),
        ("clip_00006", "img_00007.jpg: missing frame file"),
    ];
    assert_eq!(bad.len(), reasons.len(), "{bad:?}");
    for ((file, reason), (f, r)) in bad.iter().zip(reasons) {
        assert!(
            file.ends_with(f) && reason.starts_with(r),
            "{file}: {reason} (expected {f}: {r})"
        );
    }
    // A later epoch does not retry them, and still reports them.
    let again: usize = loader.epoch(1, 0).map(|b| b.unwrap().skipped.len()).sum();
    assert_eq!(again, 6);
    // 6 of 40 is over 5%: the default stops the epoch, listing the first few.
    let ds = open(&DataSpec::new(Source::RawframesList(list)), &p, Mode::Train).unwrap();
    let strict = Loader::new(
        ds,
        LoaderConfig {
            max_bad_fraction: 0.05,
            ..cfg
        },
    )
    .unwrap();
    let results: Vec<_> = strict.epoch(0, 0).collect();
    let e = results.last().unwrap().as_ref().unwrap_err();
    assert!(matches!(e, DataError::TooManyBad(_)), "{e}");
    let s = e.to_string();
    assert!(
        s.starts_with("3 of 40 files")
            && s.contains("clip_00001: img_00004.jpg: missing frame file"),
        "{s}"
    );
}

#[test]
fn check_reports_every_problem() {
    let dir = Scratch::new("check");
    let list = broken_set(dir.path(), 8);
    let spec = DataSpec::new(Source::RawframesList(list));
    let bad = |full| {
        let report = scan(&spec, 2, full).unwrap();
        assert_eq!(report.files.len(), 8);
        report
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.problem.is_some())
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    // Quick mode finds all but the odd-sized frame in the middle of item 5.
    assert_eq!(bad(false), [1, 2, 3, 4, 6]);
    assert_eq!(bad(true), [1, 2, 3, 4, 5, 6]);
    let report = scan(&spec, 1, false).unwrap();
    assert!(report.files[2]
        .problem
        .as_ref()
        .unwrap()
        .ends_with("clip_00002: img_00002.jpg is empty (0 bytes)"));
    let ok = &report.files[0];
    assert_eq!(
        (ok.frames, ok.size, ok.codec.as_deref()),
        (Some(6), Some([16, 16]), Some("jpg"))
    );
    assert!(report.files[6]
        .problem
        .as_ref()
        .unwrap()
        .contains("3 of 9 listed frames are missing, the first img_00007.jpg"));
    assert_eq!(report.class_counts.values().sum::<usize>(), 8);
}
