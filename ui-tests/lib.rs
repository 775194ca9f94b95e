//! Compile-fail cases for `#[uninterruptible::server]` live in `tests/ui`.
