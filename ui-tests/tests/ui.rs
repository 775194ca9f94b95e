//! Each file in `tests/ui` is one mistake; its `.stderr` is the exact error the user sees.
//! After a deliberate change: `TRYBUILD=overwrite cargo test -p uninterruptible-ui-tests`, then
//! read every changed `.stderr`.

#[test]
fn compile_fail() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
