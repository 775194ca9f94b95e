//! The examples of uninterruptible live beside this file; run one with
//! `cargo run --example echo`.
