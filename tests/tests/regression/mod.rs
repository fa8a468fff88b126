//! One test per fixed bug, named after its issue: `issue_<n>_<what>.rs` says what went wrong and
//! checks that it no longer does.

mod issue_16_batch_past_the_binding_limit;
mod issue_16_check_unknown_op;
mod issue_16_closed_pipe;
mod issue_16_model_input_of_the_wrong_rank;
mod issue_16_negative_flag_values;
mod issue_16_parity_sizes_before_allocating;
