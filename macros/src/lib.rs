//! `timctl-macros`: generates timctl's typed API layer from the YAML spec in `api-spec/`.
//!
//! The wire format is the part of timctl that must be exactly what Tencent documents. Writing
//! it once, as data, and generating the Rust from it means the spec is the single source of
//! truth: a new error code or a new endpoint is a spec edit, and a reviewer reads the spec, not
//! a page of hand-written structs. See [`api!`].
//!
//! Inside, the work is three steps, each in its own module: `spec` reads the YAML into plain
//! structs (with source locations), `model` checks and merges them, `codegen` writes the Rust.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::punctuated::Punctuated;
use syn::{LitStr, Token};

mod codegen;
mod model;
mod spec;

/// Generates the API layer from one or more spec files.
///
/// ```text
/// timctl_macros::api!("../api-spec/common.yaml", "../api-spec/recentcontact_delete.yaml");
/// ```
///
/// Paths are relative to the invoking crate's `CARGO_MANIFEST_DIR`. The files are merged:
/// `query` parameters, `public_errors` and `regions` may come from any file, and every
/// `endpoints` entry gets, in the invoking module:
///
/// - `struct Name;` implementing `timctl_core::api::Endpoint` (path, calls per second);
/// - `NameRequest`, whose unions are Rust enums so that invalid combinations cannot be built,
///   serialising to exactly the documented JSON;
/// - `NameResponse`, which ignores fields it does not know;
/// - `NameError`, one variant per code (the endpoint's, then the public ones) and `Unknown`,
///   implementing `timctl_core::api::ApiError` (code, class, meaning, action, info).
///
/// Plus a `query` module of parameter names and, when the spec has regions, `enum Region`.
///
/// A problem in a spec is a compile error naming the file, line, column and problem.
#[proc_macro]
pub fn api(input: TokenStream) -> TokenStream {
    let paths =
        match syn::parse::Parser::parse(Punctuated::<LitStr, Token![,]>::parse_terminated, input) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => {
                return syn::Error::new(
                    Span::call_site(),
                    "api! needs at least one spec file path",
                )
                .to_compile_error()
                .into();
            }
            Err(e) => return e.to_compile_error().into(),
        };
    let Some(root) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return syn::Error::new(
            Span::call_site(),
            "CARGO_MANIFEST_DIR is not set; build with Cargo",
        )
        .to_compile_error()
        .into();
    };
    let root = std::path::PathBuf::from(root);
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for lit in &paths {
        let shown = lit.value();
        let full = root.join(&shown);
        match std::fs::read_to_string(&full) {
            Ok(text) => sources.push((shown, full.display().to_string(), text, lit.span())),
            Err(e) => errors.push(syn::Error::new(
                lit.span(),
                format!("cannot read spec file {shown}: {e}"),
            )),
        }
    }
    if !errors.is_empty() {
        return to_compile_errors(errors).into();
    }
    let named: Vec<(String, String)> = sources
        .iter()
        .map(|(shown, _, text, _)| (shown.clone(), text.clone()))
        .collect();
    let includes: Vec<String> = sources.iter().map(|(_, full, _, _)| full.clone()).collect();
    match generate(&named, &includes) {
        Ok(tokens) => tokens.into(),
        Err(errs) => {
            // Point at the path literal of the file the problem is in.
            let errors = errs.into_iter().map(|e| {
                let span = sources
                    .iter()
                    .find(|(shown, ..)| *shown == e.file)
                    .map_or_else(Span::call_site, |s| s.3);
                syn::Error::new(span, e.to_string())
            });
            to_compile_errors(errors.collect()).into()
        }
    }
}

fn to_compile_errors(errors: Vec<syn::Error>) -> proc_macro2::TokenStream {
    let errors = errors.into_iter().map(|e| e.to_compile_error());
    quote! { #(#errors)* }
}

/// Parses, checks and generates. `files` are (name for messages, YAML text); `includes` are
/// the paths the generated code reads back so that Cargo tracks them.
fn generate(
    files: &[(String, String)],
    includes: &[String],
) -> Result<proc_macro2::TokenStream, Vec<model::SpecError>> {
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in files {
        match parse(name, text) {
            Ok(spec) => parsed.push((name.clone(), spec)),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let api = model::build(&parsed)?;
    Ok(codegen::api(&api, includes))
}

fn parse(name: &str, text: &str) -> Result<spec::SpecFile, model::SpecError> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let mut message = e.to_string();
        // serde-saphyr ends its messages with the place, which SpecError already leads with.
        let suffix = format!(" at line {line}, column {column}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
        model::SpecError {
            file: name.to_owned(),
            line,
            column,
            message,
        }
    })
}

#[cfg(test)]
mod tests;
