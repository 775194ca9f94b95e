//! Compile-fail cases for `#[uninterruptible::server]`, and for what the public API keeps
//! closed so that it can grow (a sealed trait, a table that is only read), live in `tests/ui`.
