//! The spec as the generator needs it: checked, merged over all files, with Rust identifiers.
//! Every problem becomes a [`SpecError`] naming the file, line and column.

use std::collections::BTreeMap;
use std::fmt;

use proc_macro2::{Ident, Span};
use serde_saphyr::{Location, Spanned};

use crate::spec::{ArraySpec, EndpointSpec, ErrorSpec, ItemSpec, QueryParam, RegionSpec, SpecFile};

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

    /// The items of one JSON object: a request or response body (`top`), an array's struct,
    /// or a union variant.
    fn items(
        &mut self,
        file: &str,
        items: &[Spanned<ItemSpec>],
        side: Side,
        top: bool,
    ) -> Vec<Item> {
        let mut out = Vec::new();
        let mut wire_names: BTreeMap<String, Place> = BTreeMap::new();
        let mut rust_names: BTreeMap<String, Place> = BTreeMap::new();
        for item in items {
            let place = Place::new(file, item.referenced);
            let parsed = match (&item.value.field, &item.value.union) {
                (Some(_), None) => self
                    .field(file, &place, &item.value, side, top)
                    .map(Item::Field),
                (None, Some(_)) => self.union(file, &place, &item.value, side).map(Item::Union),
                _ => {
                    self.push(place.error("an item needs exactly one of `field:` and `union:`"));
                    None
                }
            };
            let Some(parsed) = parsed else { continue };
            // Wire and Rust names must be unique across the object, variants included, since
            // they all end up in one JSON object and one Rust struct. Rust names are compared
            // upper-cased, as the generated wire-name constants spell them.
            let mut wires = Vec::new();
            let mut rusts = Vec::new();
            match &parsed {
                Item::Field(f) => {
                    wires.push(f.wire.clone());
                    rusts.push(f.rust.to_string());
                }
                Item::Union(u) => {
                    wires.push(u.tag_wire.clone());
                    rusts.push(u.rust.to_string());
                    rusts.push(format!("{}_tag", u.rust));
                    for v in &u.variants {
                        wires.extend(v.fields.iter().map(|f| f.wire.clone()));
                        rusts.extend(v.fields.iter().map(|f| f.rust.to_string()));
                    }
                }
            }
            let mut ok = true;
            for w in wires {
                if let Some(first) = wire_names.get(&w) {
                    self.push(place.error(format!("wire name `{w}` is already used at {first}")));
                    ok = false;
                }
                wire_names.entry(w).or_insert_with(|| place.clone());
            }
            for rust in rusts {
                let key = rust.to_ascii_uppercase();
                if let Some(first) = rust_names.get(&key) {
                    self.push(
                        place.error(format!("Rust name `{rust}` is already used at {first}")),
                    );
                    ok = false;
                }
                rust_names.entry(key).or_insert_with(|| place.clone());
            }
            if ok {
                out.push(parsed);
            }
        }
        out
    }

    fn field(
        &mut self,
        file: &str,
        place: &Place,
        s: &ItemSpec,
        side: Side,
        top: bool,
    ) -> Option<Field> {
        for (key, present) in [("tag", s.tag.is_some()), ("variants", s.variants.is_some())] {
            if present {
                self.push(place.error(format!("`{key}:` belongs to a union, not a field")));
                return None;
            }
        }
        let wire = s.field.as_ref()?;
        let Some(rust) = &s.rust else {
            self.push(place.error(format!(
                "field `{}` needs `rust:`, its Rust name",
                wire.value
            )));
            return None;
        };
        let Some(ty) = &s.ty else {
            self.push(place.error(format!("field `{}` needs `type:`", wire.value)));
            return None;
        };
        let Some(required) = s.required else {
            self.push(place.error(format!(
                "field `{}` needs `required: true|false`",
                wire.value
            )));
            return None;
        };
        let ty_place = Place::new(file, ty.referenced);
        let kind = ty.value.as_str();
        // Keys that belong to one type only.
        for (key, present, owner) in [
            ("enum", s.enum_name.is_some(), "int_enum"),
            ("values", s.values.is_some(), "int_enum"),
            ("items", s.items.is_some(), "array"),
        ] {
            if present && kind != owner {
                let msg = if key == "enum" {
                    "`enum:` belongs to a union or a `type: int_enum` field".to_owned()
                } else {
                    format!("`{key}:` belongs to a `type: {owner}` field")
                };
                self.push(place.error(msg));
                return None;
            }
        }
        let ty = match kind {
            "string" => FieldType::String,
            "integer" => FieldType::Integer,
            "bool01" if side == Side::Request => FieldType::Bool01,
            "bool01" => {
                self.push(ty_place.error("bool01 is supported in requests only"));
                return None;
            }
            "int_enum" => FieldType::IntEnum(self.int_enum(file, place, &wire.value, s)?),
            "array" => {
                let Some(items) = &s.items else {
                    let msg = format!(
                        "field `{}` is an array and needs `items:`, what it holds (`type:` or `struct:` with `fields:`)",
                        wire.value
                    );
                    self.push(place.error(msg));
                    return None;
                };
                FieldType::Array(Box::new(self.array(file, &wire.value, items, side)?))
            }
            other => {
                let msg = format!(
                    "unknown field type `{other}`; expected string, integer, bool01, int_enum or array"
                );
                self.push(ty_place.error(msg));
                return None;
            }
        };
        let role = match &s.role {
            None => None,
            Some(r) if side == Side::Request => {
                let place = Place::new(file, r.referenced);
                self.push(place.error("`role:` is for response fields only"));
                return None;
            }
            Some(r) if !top => {
                let place = Place::new(file, r.referenced);
                self.push(place.error(
                    "`role:` is for the response's own fields, not those of an array item or a union variant",
                ));
                return None;
            }
            Some(r) => match r.value.as_str() {
                "action_status" => Some(Role::ActionStatus),
                "error_code" => Some(Role::ErrorCode),
                "error_info" => Some(Role::ErrorInfo),
                other => {
                    let place = Place::new(file, r.referenced);
                    let msg = format!(
                        "unknown role `{other}`; expected action_status, error_code or error_info"
                    );
                    self.push(place.error(msg));
                    return None;
                }
            },
        };
        let rust = self.ident(file, rust, "field name")?;
        Some(Field {
            wire: wire.value.clone(),
            rust,
            ty,
            required,
            role,
            description: s.description.clone().unwrap_or_default(),
        })
    }

    fn int_enum(&mut self, file: &str, place: &Place, wire: &str, s: &ItemSpec) -> Option<IntEnum> {
        let Some(enum_name) = &s.enum_name else {
            self.push(place.error(format!(
                "int_enum field `{wire}` needs `enum:`, its Rust type"
            )));
            return None;
        };
        let Some(values) = &s.values else {
            self.push(place.error(format!(
                "int_enum field `{wire}` needs `values:`, its named values"
            )));
            return None;
        };
        if values.value.is_empty() {
            let place = Place::new(file, values.referenced);
            self.push(place.error(format!("int_enum field `{wire}` has no values")));
            return None;
        }
        let name = self.type_name(file, enum_name, "int_enum type");
        let mut seen: BTreeMap<i64, Place> = BTreeMap::new();
        let mut names: BTreeMap<String, Place> = BTreeMap::new();
        let mut out = Vec::new();
        let mut ok = true;
        for v in &values.value {
            let vplace = Place::new(file, v.value.referenced);
            if let Some(first) = seen.get(&v.value.value) {
                let msg = format!(
                    "duplicate value {} in `{}`: first used at {first}",
                    v.value.value, enum_name.value
                );
                self.push(vplace.error(msg));
                ok = false;
                continue;
            }
            seen.insert(v.value.value, vplace);
            let nplace = Place::new(file, v.name.referenced);
            if v.name.value == "Unknown" {
                let msg = "the value name `Unknown` is reserved for values the spec does not name";
                self.push(nplace.error(msg));
                ok = false;
                continue;
            }
            if let Some(first) = names.get(&v.name.value) {
                let msg = format!(
                    "duplicate value name `{}`: first used at {first}",
                    v.name.value
                );
                self.push(nplace.error(msg));
                ok = false;
                continue;
            }
            names.insert(v.name.value.clone(), nplace);
            let Some(vname) = self.ident(file, &v.name, "value name") else {
                ok = false;
                continue;
            };
            out.push(EnumValue {
                value: v.value.value,
                name: vname,
                description: v.description.clone(),
            });
        }
        let name = name?;
        ok.then(|| IntEnum {
            name,
            description: s.description.clone().unwrap_or_default(),
            values: out,
        })
    }

    fn array(
        &mut self,
        file: &str,
        wire: &str,
        items: &Spanned<ArraySpec>,
        side: Side,
    ) -> Option<ArrayOf> {
        let place = Place::new(file, items.referenced);
        let a = &items.value;
        match (&a.ty, &a.struct_name) {
            (Some(ty), None) => {
                for (key, present) in [
                    ("fields", a.fields.is_some()),
                    ("description", a.description.is_some()),
                ] {
                    if present {
                        let msg = format!("`{key}:` belongs to an array of `struct:`");
                        self.push(place.error(msg));
                        return None;
                    }
                }
                match ty.value.as_str() {
                    "string" => Some(ArrayOf::String),
                    "integer" => Some(ArrayOf::Integer),
                    other => {
                        let place = Place::new(file, ty.referenced);
                        let msg = format!(
                            "unknown array item type `{other}`; expected string or integer, or `struct:` with `fields:`"
                        );
                        self.push(place.error(msg));
                        None
                    }
                }
            }
            (None, Some(name)) => {
                if side == Side::Request {
                    let msg = "an array of structs is supported in responses only";
                    self.push(place.error(msg));
                    return None;
                }
                let Some(fields) = &a.fields else {
                    let msg = format!(
                        "the items of `{wire}` need `fields:`, the items of struct `{}`",
                        name.value
                    );
                    self.push(place.error(msg));
                    return None;
                };
                let struct_name = self.type_name(file, name, "struct name");
                let items = self.items(file, fields, side, false);
                Some(ArrayOf::Struct(Object {
                    name: struct_name?,
                    description: a.description.clone().unwrap_or_default(),
                    items,
                }))
            }
            _ => {
                let msg = format!(
                    "the items of `{wire}` need exactly one of `type:` (string or integer) and `struct:`"
                );
                self.push(place.error(msg));
                None
            }
        }
    }

    fn union(&mut self, file: &str, place: &Place, s: &ItemSpec, side: Side) -> Option<Union> {
        for (key, present) in [
            ("field", s.field.is_some()),
            ("rust", s.rust.is_some()),
            ("type", s.ty.is_some()),
            ("required", s.required.is_some()),
            ("role", s.role.is_some()),
            ("items", s.items.is_some()),
            ("values", s.values.is_some()),
        ] {
            if present {
                self.push(place.error(format!("`{key}:` belongs to a field, not a union")));
                return None;
            }
        }
        let rust_name = s.union.as_ref()?;
        let rust = self.ident(file, rust_name, "union name")?;
        let Some(enum_name) = &s.enum_name else {
            self.push(place.error(format!(
                "union `{}` needs `enum:`, its Rust type",
                rust_name.value
            )));
            return None;
        };
        let enum_name = self.type_name(file, enum_name, "union type")?;
        let Some(tag) = &s.tag else {
            self.push(place.error(format!(
                "union `{}` needs `tag:`, its wire key",
                rust_name.value
            )));
            return None;
        };
        let Some(variants) = &s.variants else {
            self.push(place.error(format!("union `{}` needs `variants:`", rust_name.value)));
            return None;
        };
        if variants.value.is_empty() {
            let place = Place::new(file, variants.referenced);
            self.push(place.error(format!("union `{}` has no variants", rust_name.value)));
            return None;
        }
        let mut tags: BTreeMap<i64, Place> = BTreeMap::new();
        let mut names: BTreeMap<String, Place> = BTreeMap::new();
        let mut out = Vec::new();
        for v in &variants.value {
            let vplace = Place::new(file, v.tag.referenced);
            if let Some(first) = tags.get(&v.tag.value) {
                let msg = format!("duplicate union tag {}: first used at {first}", v.tag.value);
                self.push(vplace.error(msg));
                continue;
            }
            tags.insert(v.tag.value, vplace);
            let nplace = Place::new(file, v.name.referenced);
            if side == Side::Response && v.name.value == "Unknown" {
                let msg = "the variant name `Unknown` is reserved for tags the spec does not know";
                self.push(nplace.error(msg));
                continue;
            }
            if let Some(first) = names.get(&v.name.value) {
                let msg = format!(
                    "duplicate variant name `{}`: first used at {first}",
                    v.name.value
                );
                self.push(nplace.error(msg));
                continue;
            }
            names.insert(v.name.value.clone(), nplace);
            let Some(name) = self.ident(file, &v.name, "variant name") else {
                continue;
            };
            let mut fields = Vec::new();
            for f in self.items(file, &v.fields, side, false) {
                match f {
                    Item::Field(f) => fields.push(f),
                    Item::Union(_) => {
                        let msg = "a union variant cannot hold another union";
                        self.push(Place::new(file, v.name.referenced).error(msg));
                    }
                }
            }
            out.push(Variant {
                tag: v.tag.value,
                name,
                description: v.description.clone(),
                fields,
            });
        }
        Some(Union {
            rust,
            enum_name,
            tag_wire: tag.value.clone(),
            description: s.description.clone().unwrap_or_default(),
            variants: out,
            side,
        })
    }
}

/// Error names the generator uses itself.
const RESERVED_ERROR_NAMES: &[&str] = &["Unknown", "NotOk"];
