//! A malformed spec is a compile error that names the spec file, the place and the problem,
//! never a panic. Each case in tests/ui/ invokes the macro on a bad spec in tests/specs/bad/
//! and checks the compiler's message against its `.stderr` file.
//!
//! trybuild compiles each case in a crate of its own under `target/tests/trybuild/timctl-core/`,
//! which is that crate's `CARGO_MANIFEST_DIR`; hence the `../../../../core/` in the cases' paths.
//! They assume the default target directory.

#[test]
fn malformed_specs_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
