//! Helpers shared by the kernel tests. Each test file includes this with
//! `mod common;` and uses what it needs.

#![allow(dead_code)] // reason: each test binary uses a different subset

pub mod netns;
