//! Three generated tests per kernel op (see engine/src/testing.rs):
//! `forward_matches_reference`, `backward_matches_numerical`, `gpu_backward_matches_reference`.

macro_rules! op_tests {
    ($op:ident) => {
        mod $op {
            #[test]
            fn forward_matches_reference() {
                tubelet::testing::check_forward(tubelet::ops::$op::test_spec());
            }
            #[test]
            fn backward_matches_numerical() {
                tubelet::testing::check_reference_backward(tubelet::ops::$op::test_spec());
            }
            #[test]
            fn gpu_backward_matches_reference() {
                tubelet::testing::check_gpu_backward(tubelet::ops::$op::test_spec());
            }
        }
    };
}

tubelet::for_each_op!(op_tests);
