//! Compile-time behaviour: what `#[budgeted]` accepts (`ui/pass`, compiled and run) and the
//! errors it gives (`ui/fail`, checked against the `.stderr` snapshots beside each case).
//!
//! Regenerate the snapshots after a deliberate change with `TRYBUILD=overwrite cargo test -p
//! budget-macros --test ui`, then read every changed `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
