//! The spec as the generator needs it: checked, merged over all files, with Rust identifiers.
//! Every problem becomes a [`SpecError`] naming the file, line and column.

use std::collections::BTreeMap;
use std::fmt;

use proc_macro2::{Ident, Span};
use serde_saphyr::{Location, Spanned};

mod items;

use crate::spec::{EndpointSpec, ErrorSpec, QueryParam, RegionSpec, SpecFile};

/// A problem with a spec, at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecError {
    pub(crate) file: String,
    pub(crate) line: u64,
    pub(crate) column: u64,
    pub(crate) message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// A place in a spec file, for messages.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    file: String,
    line: u64,
    column: u64,
}

impl Place {
    pub(crate) fn new(file: &str, location: Location) -> Self {
        Place {
            file: file.to_owned(),
            line: location.line(),
            column: location.column(),
        }
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> SpecError {
        SpecError {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            message: message.into(),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Retry,
    Fatal,
    Item,
    AlreadyAbsent,
}

#[derive(Debug, Clone)]
pub(crate) struct ErrorCode {
    pub(crate) code: i64,
    pub(crate) variant: Ident,
    pub(crate) class: Class,
    pub(crate) meaning: String,
    pub(crate) action: String,
}

#[derive(Debug, Clone)]
pub(crate) enum FieldType {
    String,
    Integer,
    /// A Rust `bool`, `0`/`1` on the wire.
    Bool01,
    /// An integer with named values.
    IntEnum(IntEnum),
    /// A JSON array.
    Array(Box<ArrayOf>),
}

/// What an array holds.
#[derive(Debug, Clone)]
pub(crate) enum ArrayOf {
    String,
    Integer,
    Struct(Object),
}

/// A JSON object read from a response: a generated struct with its own fields and unions.
#[derive(Debug, Clone)]
pub(crate) struct Object {
    pub(crate) name: Ident,
    pub(crate) description: String,
    pub(crate) items: Vec<Item>,
}

/// An integer with named values, generated as a Rust enum with an `Unknown(i64)` variant for
/// values the spec does not name.
#[derive(Debug, Clone)]
pub(crate) struct IntEnum {
    pub(crate) name: Ident,
    pub(crate) description: String,
    pub(crate) values: Vec<EnumValue>,
}

#[derive(Debug, Clone)]
pub(crate) struct EnumValue {
    pub(crate) value: i64,
    pub(crate) name: Ident,
    pub(crate) description: String,
}

/// Which body an item is in: requests are written by timctl, responses read from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    ActionStatus,
    ErrorCode,
    ErrorInfo,
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) wire: String,
    pub(crate) rust: Ident,
    pub(crate) ty: FieldType,
    pub(crate) required: bool,
    pub(crate) role: Option<Role>,
    pub(crate) description: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Variant {
    pub(crate) tag: i64,
    pub(crate) name: Ident,
    pub(crate) description: String,
    pub(crate) fields: Vec<Field>,
}

#[derive(Debug, Clone)]
pub(crate) struct Union {
    pub(crate) rust: Ident,
    pub(crate) enum_name: Ident,
    pub(crate) tag_wire: String,
    pub(crate) description: String,
    pub(crate) variants: Vec<Variant>,
    /// A response union also decodes tags the spec does not know, as `Unknown { tag }`.
    pub(crate) side: Side,
}

#[derive(Debug, Clone)]
pub(crate) enum Item {
    Field(Field),
    Union(Union),
}

/// The response fields whose roles decide success: `ActionStatus == "OK"` and `ErrorCode == 0`.
#[derive(Debug, Clone)]
pub(crate) struct Roles {
    pub(crate) action_status: Ident,
    /// Whether the `role: action_status` field is required (else it is an `Option`).
    pub(crate) action_status_required: bool,
    pub(crate) error_code: Ident,
    pub(crate) error_info: Option<Ident>,
}

#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) name: Ident,
    pub(crate) path: String,
    pub(crate) summary: String,
    pub(crate) description: Option<String>,
    pub(crate) calls_per_second: u32,
    pub(crate) request: Vec<Item>,
    pub(crate) response: Vec<Item>,
    pub(crate) roles: Roles,
    /// The endpoint's own codes, then the public ones.
    pub(crate) errors: Vec<ErrorCode>,
}

#[derive(Debug, Clone)]
pub(crate) struct Region {
    pub(crate) name: String,
    pub(crate) variant: Ident,
    pub(crate) host: String,
    pub(crate) description: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub(crate) name: String,
    pub(crate) constant: Ident,
    pub(crate) description: String,
}

/// Everything one `api!` invocation generates code for.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub(crate) query: Vec<Query>,
    pub(crate) regions: Vec<Region>,
    pub(crate) endpoints: Vec<Endpoint>,
}

/// Checks parsed spec files (named as the invocation names them) and merges them.
/// Collects every problem rather than stopping at the first.
pub(crate) fn build(files: &[(String, SpecFile)]) -> Result<Api, Vec<SpecError>> {
    let mut cx = Cx::default();
    let mut public = Vec::new();
    let mut regions = Vec::new();
    let mut query = Vec::new();
    let mut endpoint_specs = Vec::new();
    for (file, spec) in files {
        for q in &spec.query {
            query.extend(cx.query(file, q));
        }
        public.extend(cx.errors(file, &spec.public_errors));
        for r in &spec.regions {
            regions.extend(cx.region(file, r));
        }
        endpoint_specs.extend(spec.endpoints.iter().map(|e| (file.as_str(), e)));
    }
    let mut endpoints = Vec::new();
    for (file, e) in endpoint_specs {
        endpoints.extend(cx.endpoint(file, e, &public));
    }
    if endpoints.is_empty() && cx.errors.is_empty() {
        let file = files.first().map(|(f, _)| f.clone()).unwrap_or_default();
        cx.errors.push(SpecError {
            file,
            line: 0,
            column: 0,
            message: "the spec describes no endpoint; add one under `endpoints:`".into(),
        });
    }
    if cx.errors.is_empty() {
        Ok(Api {
            query,
            regions,
            endpoints,
        })
    } else {
        Err(cx.errors)
    }
}

#[derive(Default)]
struct Cx {
    errors: Vec<SpecError>,
    /// Names that must be unique across the whole invocation, with where they were first seen.
    region_names: BTreeMap<String, Place>,
    type_names: BTreeMap<String, Place>,
}

impl Cx {
    fn push(&mut self, e: SpecError) {
        self.errors.push(e);
    }

    /// A Rust identifier from a spec string, or an error at its place.
    fn ident(&mut self, file: &str, s: &Spanned<String>, what: &str) -> Option<Ident> {
        let place = Place::new(file, s.referenced);
        match syn::parse_str::<Ident>(&s.value) {
            Ok(_) => Some(Ident::new(&s.value, Span::call_site())),
            Err(_) => {
                self.push(place.error(format!("{what} `{}` is not a Rust identifier", s.value)));
                None
            }
        }
    }

    /// Registers a generated type name, refusing one already taken.
    fn type_name(&mut self, file: &str, s: &Spanned<String>, what: &str) -> Option<Ident> {
        let ident = self.ident(file, s, what)?;
        let place = Place::new(file, s.referenced);
        if let Some(first) = self.type_names.get(&s.value) {
            let msg = format!(
                "{what} `{}` names a type already generated at {first}",
                s.value
            );
            self.push(place.error(msg));
            return None;
        }
        self.type_names.insert(s.value.clone(), place);
        Some(ident)
    }

    fn query(&mut self, file: &str, q: &QueryParam) -> Option<Query> {
        let name = &q.name.value;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            let place = Place::new(file, q.name.referenced);
            self.push(place.error(format!("query parameter `{name}` must be lowercase ASCII")));
            return None;
        }
        Some(Query {
            name: name.clone(),
            constant: Ident::new(&name.to_ascii_uppercase(), Span::call_site()),
            description: q.description.clone(),
        })
    }

    fn region(&mut self, file: &str, r: &RegionSpec) -> Option<Region> {
        let place = Place::new(file, r.name.referenced);
        if let Some(first) = self.region_names.get(&r.name.value) {
            let msg = format!("region `{}` is already defined at {first}", r.name.value);
            self.push(place.error(msg));
            return None;
        }
        self.region_names.insert(r.name.value.clone(), place);
        let host = &r.host.value;
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !host_ok {
            let place = Place::new(file, r.host.referenced);
            let msg = format!("host `{host}` must be a bare host name, without scheme or path");
            self.push(place.error(msg));
            return None;
        }
        let variant = self.ident(file, &r.rust, "region")?;
        Some(Region {
            name: r.name.value.clone(),
            variant,
            host: host.clone(),
            description: r.description.clone(),
        })
    }

    fn errors(&mut self, file: &str, specs: &[ErrorSpec]) -> Vec<(ErrorCode, Place)> {
        specs
            .iter()
            .filter_map(|e| self.error_code(file, e))
            .collect()
    }

    fn error_code(&mut self, file: &str, e: &ErrorSpec) -> Option<(ErrorCode, Place)> {
        let class = match e.class.value.as_str() {
            "retry" => Class::Retry,
            "fatal" => Class::Fatal,
            "item" => Class::Item,
            "already_absent" => Class::AlreadyAbsent,
            other => {
                let place = Place::new(file, e.class.referenced);
                let msg = format!(
                    "unknown error class `{other}`; expected retry, fatal, item or already_absent"
                );
                self.push(place.error(msg));
                return None;
            }
        };
        if e.code.value == 0 {
            let place = Place::new(file, e.code.referenced);
            self.push(place.error("error code 0 means success and cannot be an error"));
            return None;
        }
        let variant = self.ident(file, &e.name, "error name")?;
        let code = ErrorCode {
            code: e.code.value,
            variant,
            class,
            meaning: e.meaning.clone(),
            action: e.action.clone(),
        };
        Some((code, Place::new(file, e.code.referenced)))
    }

    fn endpoint(
        &mut self,
        file: &str,
        e: &EndpointSpec,
        public: &[(ErrorCode, Place)],
    ) -> Option<Endpoint> {
        let name = self.type_name(file, &e.name, "endpoint name");
        let path = &e.path.value;
        if path.is_empty() || path.starts_with('/') || path.contains("://") || path.contains('?') {
            let place = Place::new(file, e.path.referenced);
            let msg =
                format!("path `{path}` must be relative to the host, like v4/recentcontact/delete");
            self.push(place.error(msg));
        }
        if e.calls_per_second.value == 0 {
            let place = Place::new(file, e.calls_per_second.referenced);
            self.push(place.error("calls_per_second must be at least 1"));
        }
        let request = self.items(file, &e.request, Side::Request, true);
        let response = self.items(file, &e.response, Side::Response, true);

        let name = name?;
        let place = Place::new(file, e.name.referenced);
        let roles = self.roles(&place, &response)?;

        // The endpoint's own codes first, then the public ones; a code may appear once.
        let own = self.errors(file, &e.errors);
        let mut seen: BTreeMap<i64, Place> = BTreeMap::new();
        let mut names: BTreeMap<String, Place> = BTreeMap::new();
        let mut errors = Vec::new();
        for (code, place) in own.iter().chain(public) {
            if let Some(first) = seen.get(&code.code) {
                let msg = format!(
                    "duplicate error code {}: first defined at {first}",
                    code.code
                );
                self.push(place.error(msg));
                continue;
            }
            let variant = code.variant.to_string();
            if RESERVED_ERROR_NAMES.contains(&variant.as_str()) {
                let msg = format!(
                    "the error name `{variant}` is reserved: `Unknown` for codes the spec does not describe, `NotOk` for an answer with ErrorCode 0 that is not OK"
                );
                self.push(place.error(msg));
                continue;
            }
            if let Some(first) = names.get(&variant) {
                let msg = format!("duplicate error name `{variant}`: first used at {first}");
                self.push(place.error(msg));
                continue;
            }
            seen.insert(code.code, place.clone());
            names.insert(variant, place.clone());
            errors.push(code.clone());
        }
        Some(Endpoint {
            name,
            path: path.clone(),
            summary: e.summary.clone(),
            description: e.description.clone(),
            calls_per_second: e.calls_per_second.value,
            request,
            response,
            roles,
            errors,
        })
    }

    /// The fields whose roles decide success. Both `action_status` and `error_code` are
    /// required, so that no endpoint can be generated that takes an answer for success from
    /// its code alone.
    fn roles(&mut self, place: &Place, response: &[Item]) -> Option<Roles> {
        let with = |role: Role| -> Vec<&Field> {
            response
                .iter()
                .filter_map(|i| match i {
                    Item::Field(f) if f.role == Some(role) => Some(f),
                    _ => None,
                })
                .collect()
        };
        let (status, codes, infos) = (
            with(Role::ActionStatus),
            with(Role::ErrorCode),
            with(Role::ErrorInfo),
        );
        let mut ok = true;
        let action_status = match status.as_slice() {
            [f] if matches!(f.ty, FieldType::String) => Some((f.rust.clone(), f.required)),
            [_] => {
                self.push(place.error("the `role: action_status` field must be a string"));
                ok = false;
                None
            }
            _ => {
                let msg = "the response needs exactly one field with `role: action_status` (success is ActionStatus OK and ErrorCode 0)";
                self.push(place.error(msg));
                ok = false;
                None
            }
        };
        let error_code = match codes.as_slice() {
            [f] if matches!(f.ty, FieldType::Integer) && f.required => Some(f.rust.clone()),
            [_] => {
                self.push(place.error("the `role: error_code` field must be a required integer"));
                ok = false;
                None
            }
            _ => {
                let msg = "the response needs exactly one field with `role: error_code`";
                self.push(place.error(msg));
                ok = false;
                None
            }
        };
        let error_info = match infos.as_slice() {
            [] => None,
            [f] if matches!(f.ty, FieldType::String) => Some(f.rust.clone()),
            _ => {
                let msg = "the response may have one string field with `role: error_info`";
                self.push(place.error(msg));
                ok = false;
                None
            }
        };
        if !ok {
            return None;
        }
        let (action_status, action_status_required) = action_status?;
        Some(Roles {
            action_status,
            action_status_required,
            error_code: error_code?,
            error_info,
        })
    }
}

/// Error names the generator uses itself.
const RESERVED_ERROR_NAMES: &[&str] = &["Unknown", "NotOk"];
