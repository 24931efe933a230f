//! The spec as the generator needs it: checked, merged over all files, with Rust identifiers.
//! Every problem becomes a [`SpecError`] naming the file, line and column.

use std::collections::BTreeMap;
use std::fmt;

use proc_macro2::{Ident, Span};
use serde_saphyr::{Location, Spanned};

use crate::spec::{EndpointSpec, ErrorSpec, ItemSpec, QueryParam, RegionSpec, SpecFile};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    String,
    Integer,
    /// A Rust `bool`, `0`/`1` on the wire.
    Bool01,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
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
}

#[derive(Debug, Clone)]
pub(crate) enum Item {
    Field(Field),
    Union(Union),
}

#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) name: Ident,
    pub(crate) path: String,
    pub(crate) summary: String,
    pub(crate) description: Option<String>,
    pub(crate) calls_per_second: u32,
    pub(crate) request: Vec<Item>,
    pub(crate) response: Vec<Field>,
    pub(crate) error_code_field: Ident,
    pub(crate) error_info_field: Option<Ident>,
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
        let request = self.items(file, &e.request, true);
        let response = self.items(file, &e.response, false);
        let response: Vec<Field> = response
            .into_iter()
            .filter_map(|i| match i {
                Item::Field(f) => Some(f),
                Item::Union(_) => None,
            })
            .collect();

        let name = name?;
        let code_fields: Vec<&Field> = response
            .iter()
            .filter(|f| f.role == Some(Role::ErrorCode))
            .collect();
        let info_fields: Vec<&Field> = response
            .iter()
            .filter(|f| f.role == Some(Role::ErrorInfo))
            .collect();
        let place = Place::new(file, e.name.referenced);
        let error_code_field = match code_fields.as_slice() {
            [f] if f.ty == FieldType::Integer && f.required => f.rust.clone(),
            [_] => {
                self.push(place.error("the `role: error_code` field must be a required integer"));
                return None;
            }
            _ => {
                let msg = "the response needs exactly one field with `role: error_code`";
                self.push(place.error(msg));
                return None;
            }
        };
        let error_info_field = match info_fields.as_slice() {
            [] => None,
            [f] if f.ty == FieldType::String => Some(f.rust.clone()),
            _ => {
                let msg = "the response may have one string field with `role: error_info`";
                self.push(place.error(msg));
                return None;
            }
        };

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
            if variant == "Unknown" {
                let msg =
                    "the error name `Unknown` is reserved for codes the spec does not describe";
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
            error_code_field,
            error_info_field,
            errors,
        })
    }

    fn items(&mut self, file: &str, items: &[Spanned<ItemSpec>], request: bool) -> Vec<Item> {
        let mut out = Vec::new();
        let mut wire_names: BTreeMap<String, Place> = BTreeMap::new();
        let mut rust_names: BTreeMap<String, Place> = BTreeMap::new();
        for item in items {
            let place = Place::new(file, item.referenced);
            let parsed = match (&item.value.field, &item.value.union) {
                (Some(_), None) => self
                    .field(file, &place, &item.value, request)
                    .map(Item::Field),
                (None, Some(_)) if request => {
                    self.union(file, &place, &item.value).map(Item::Union)
                }
                (None, Some(_)) => {
                    self.push(
                        place.error("a response cannot hold a union; unions are for requests"),
                    );
                    None
                }
                _ => {
                    self.push(place.error("an item needs exactly one of `field:` and `union:`"));
                    None
                }
            };
            let Some(parsed) = parsed else { continue };
            // Wire and Rust names must be unique across the body, variants included, since
            // they all end up in one JSON object and one Rust struct.
            let mut wires = Vec::new();
            let rust = match &parsed {
                Item::Field(f) => {
                    wires.push(f.wire.clone());
                    f.rust.to_string()
                }
                Item::Union(u) => {
                    wires.push(u.tag_wire.clone());
                    for v in &u.variants {
                        wires.extend(v.fields.iter().map(|f| f.wire.clone()));
                    }
                    u.rust.to_string()
                }
            };
            let mut ok = true;
            for w in wires {
                if let Some(first) = wire_names.get(&w) {
                    self.push(place.error(format!("wire name `{w}` is already used at {first}")));
                    ok = false;
                }
                wire_names.entry(w).or_insert_with(|| place.clone());
            }
            if let Some(first) = rust_names.get(&rust) {
                self.push(place.error(format!("Rust name `{rust}` is already used at {first}")));
                ok = false;
            }
            rust_names.entry(rust).or_insert_with(|| place.clone());
            if ok {
                out.push(parsed);
            }
        }
        out
    }

    fn field(&mut self, file: &str, place: &Place, s: &ItemSpec, request: bool) -> Option<Field> {
        for (key, present) in [
            ("enum", s.enum_name.is_some()),
            ("tag", s.tag.is_some()),
            ("variants", s.variants.is_some()),
        ] {
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
        let ty = match ty.value.as_str() {
            "string" => FieldType::String,
            "integer" => FieldType::Integer,
            "bool01" if request => FieldType::Bool01,
            "bool01" => {
                self.push(ty_place.error("bool01 is supported in requests only"));
                return None;
            }
            other => {
                let msg =
                    format!("unknown field type `{other}`; expected string, integer or bool01");
                self.push(ty_place.error(msg));
                return None;
            }
        };
        let role = match &s.role {
            None => None,
            Some(r) if request => {
                let place = Place::new(file, r.referenced);
                self.push(place.error("`role:` is for response fields only"));
                return None;
            }
            Some(r) => match r.value.as_str() {
                "error_code" => Some(Role::ErrorCode),
                "error_info" => Some(Role::ErrorInfo),
                other => {
                    let place = Place::new(file, r.referenced);
                    let msg = format!("unknown role `{other}`; expected error_code or error_info");
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

    fn union(&mut self, file: &str, place: &Place, s: &ItemSpec) -> Option<Union> {
        for (key, present) in [
            ("field", s.field.is_some()),
            ("rust", s.rust.is_some()),
            ("type", s.ty.is_some()),
            ("required", s.required.is_some()),
            ("role", s.role.is_some()),
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
            for f in self.items(file, &v.fields, true) {
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
        })
    }
}
