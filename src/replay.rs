//! SKELETON: being written in its own branch.
