//! SKELETON: the kernel enforcer, being written in its own branch.
