//! SKELETON: command-line parsing (argh) and the refract 0.2 compatibility layer.

/// Entry point; returns the exit code.
pub fn main() -> i32 {
    0
}
