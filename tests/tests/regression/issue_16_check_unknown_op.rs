//! Issue 16: `tubelet check --op NAME` with an unknown name said only that nothing matched. The
//! error lists every op (before any GPU is opened).

#[test]
fn check_with_an_unknown_op_lists_the_ops() {
    let err = tubelet_cli::check::select(Some("no-such-op"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"no-such-op\""), "{err}");
    for op in tubelet_cli::check::op_names() {
        assert!(err.contains(op), "{op} missing from: {err}");
    }
    assert_eq!(
        tubelet_cli::check::select(Some("window")).unwrap(),
        ["window_attention"]
    );
}
