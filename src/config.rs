//! SKELETON: the validated configuration.
