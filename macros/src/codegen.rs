//! Turns the checked model into Rust. The output names `::serde`, `::schemars` and
//! `::timctl_core::api`, so the invoking crate must depend on serde and schemars, and be
//! `timctl-core` (which declares `extern crate self as timctl_core`) or depend on it.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::model::{
    Api, ArrayOf, Class, Endpoint, Field, FieldType, IntEnum, Item, Region, Side, Union,
};

/// The code for a whole `api!` invocation. `sources` are the spec files' paths as the compiler
/// should read them, so that Cargo rebuilds when one changes.
pub(crate) fn api(api: &Api, sources: &[String]) -> TokenStream {
    let rebuild = sources.iter().map(|path| {
        quote! { const _: &str = ::core::include_str!(#path); }
    });
    let query = query(api);
    let regions = (!api.regions.is_empty()).then(|| regions(&api.regions));
    let endpoints = api.endpoints.iter().map(endpoint);
    quote! {
        // Read the spec files here too, so that Cargo rebuilds this crate when one changes.
        #(#rebuild)*
        #query
        #regions
        #(#endpoints)*
    }
}

fn doc(text: &str) -> TokenStream {
    let lines = text.lines().map(|l| format!(" {l}"));
    quote! { #( #[doc = #lines] )* }
}

fn query(api: &Api) -> TokenStream {
    let consts = api.query.iter().map(|q| {
        let doc = doc(&q.description);
        let (name, constant) = (&q.name, &q.constant);
        quote! { #doc pub const #constant: &str = #name; }
    });
    quote! {
        /// The query parameters every REST call carries, by their wire names.
        pub mod query {
            #(#consts)*
        }
    }
}

fn regions(regions: &[Region]) -> TokenStream {
    let variants = regions.iter().map(|r| {
        let doc = doc(&format!("{}\n\nHost: `{}`.", r.description, r.host));
        let (v, name) = (&r.variant, &r.name);
        quote! { #doc #[serde(rename = #name)] #v }
    });
    let idents: Vec<&Ident> = regions.iter().map(|r| &r.variant).collect();
    let names: Vec<&String> = regions.iter().map(|r| &r.name).collect();
    let hosts: Vec<&String> = regions.iter().map(|r| &r.host).collect();
    let list = regions
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    quote! {
        /// Where an app lives, which picks the host its REST calls go to.
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
            ::serde::Serialize, ::serde::Deserialize, ::schemars::JsonSchema
        )]
        pub enum Region {
            #(#variants,)*
        }

        impl Region {
            /// Every region, in the spec's order.
            pub const ALL: &'static [Region] = &[#(Region::#idents),*];

            /// The name a manifest's `app.region` uses.
            pub fn name(self) -> &'static str {
                match self { #(Region::#idents => #names,)* }
            }

            /// The API host, without scheme.
            pub fn host(self) -> &'static str {
                match self { #(Region::#idents => #hosts,)* }
            }
        }

        impl ::core::fmt::Display for Region {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::core::str::FromStr for Region {
            type Err = ::std::string::String;
            fn from_str(s: &str) -> ::core::result::Result<Self, Self::Err> {
                match s {
                    #(#names => Ok(Region::#idents),)*
                    other => Err(::std::format!("unknown region {other:?}; expected one of {}", #list)),
                }
            }
        }
    }
}

/// The Rust type of one value of a field, before `Option`.
fn base_type(ty: &FieldType) -> TokenStream {
    match ty {
        FieldType::String => quote!(::std::string::String),
        FieldType::Integer => quote!(i64),
        FieldType::Bool01 => quote!(bool),
        FieldType::IntEnum(e) => {
            let name = &e.name;
            quote!(#name)
        }
        FieldType::Array(a) => {
            let item = match &**a {
                ArrayOf::String => quote!(::std::string::String),
                ArrayOf::Integer => quote!(i64),
                ArrayOf::Struct(o) => {
                    let name = &o.name;
                    quote!(#name)
                }
            };
            quote!(::std::vec::Vec<#item>)
        }
    }
}

/// Whether the field reads as an empty array when absent, rather than as `None`: arrays in
/// responses, where an absent list and an empty one mean the same.
fn empty_when_absent(f: &Field, side: Side) -> bool {
    side == Side::Response && matches!(f.ty, FieldType::Array(_))
}

fn rust_type(f: &Field, side: Side) -> TokenStream {
    let base = base_type(&f.ty);
    if f.required || empty_when_absent(f, side) {
        base
    } else {
        quote!(::core::option::Option<#base>)
    }
}

fn field_doc(f: &Field, side: Side) -> TokenStream {
    let mut text = format!("`{}`: {}", f.wire, f.description);
    if !f.required && empty_when_absent(f, side) {
        text.push_str("\n\nAbsent on the wire reads as empty.");
    }
    doc(&text)
}

fn field_decl(f: &Field, side: Side) -> TokenStream {
    let doc = field_doc(f, side);
    let (name, ty) = (&f.rust, rust_type(f, side));
    quote! { #doc pub #name: #ty }
}

/// A field without `pub`, as enum variants need.
fn variant_field_decl(f: &Field, side: Side) -> TokenStream {
    let doc = field_doc(f, side);
    let (name, ty) = (&f.rust, rust_type(f, side));
    quote! { #doc #name: #ty }
}

/// Writes one field into the open map `map`, reading it from the expression `value`
/// (a reference to the Rust value).
fn serialize_field(f: &Field, value: TokenStream) -> TokenStream {
    let wire = &f.wire;
    let put = |v: TokenStream| match f.ty {
        FieldType::Bool01 => quote! { map.serialize_entry(#wire, &u8::from(*#v))?; },
        _ => quote! { map.serialize_entry(#wire, #v)?; },
    };
    if f.required {
        put(value)
    } else {
        let inner = put(quote!(inner));
        quote! { if let ::core::option::Option::Some(inner) = #value { #inner } }
    }
}

/// The upper-case constant that holds a Rust name's wire name.
fn wire_const(rust: &str) -> Ident {
    format_ident!("{}", rust.to_ascii_uppercase())
}

/// `impl Name { pub const FIELD: &str = "Wire"; ... }` for every wire key of an object, so
/// that code needing a wire name (a message, a test) never types it by hand.
fn wire_consts(name: &Ident, items: &[Item]) -> TokenStream {
    let mut consts = Vec::new();
    let mut push = |rust: String, wire: &str, what: String| {
        let c = wire_const(&rust);
        let d = format!(" The wire name of {what}: `{wire}`.");
        consts.push(quote! { #[doc = #d] pub const #c: &'static str = #wire; });
    };
    for item in items {
        match item {
            Item::Field(f) => push(f.rust.to_string(), &f.wire, format!("`{}`", f.rust)),
            Item::Union(u) => {
                push(
                    format!("{}_tag", u.rust),
                    &u.tag_wire,
                    format!("the tag of `{}`", u.rust),
                );
                for v in &u.variants {
                    for f in &v.fields {
                        push(
                            f.rust.to_string(),
                            &f.wire,
                            format!("`{}::{}::{}`", u.enum_name, v.name, f.rust),
                        );
                    }
                }
            }
        }
    }
    quote! {
        impl #name {
            #(#consts)*
        }
    }
}

/// Every type an object's items need besides the object itself: union enums, int enums and
/// the structs of arrays (with theirs, recursively).
fn nested_types(items: &[Item], out: &mut Vec<TokenStream>) {
    let field = |f: &Field, out: &mut Vec<TokenStream>| match &f.ty {
        FieldType::IntEnum(e) => out.push(int_enum(e)),
        FieldType::Array(a) => {
            if let ArrayOf::Struct(o) = &**a {
                let d = format!(
                    "{}\n\nRead from the server; fields the spec does not list are ignored.",
                    o.description
                );
                out.push(response_object(&o.name, &doc(&d), &o.items));
                nested_types(&o.items, out);
            }
        }
        FieldType::String | FieldType::Integer | FieldType::Bool01 => {}
    };
    for item in items {
        match item {
            Item::Field(f) => field(f, out),
            Item::Union(u) => {
                out.push(union_enum(u));
                for v in &u.variants {
                    for f in &v.fields {
                        field(f, out);
                    }
                }
            }
        }
    }
}

fn int_enum(e: &IntEnum) -> TokenStream {
    let name = &e.name;
    let enum_doc = doc(&format!(
        "{}\n\nAn integer on the wire; a value the spec does not name is kept as `Unknown`.",
        e.description
    ));
    let variants = e.values.iter().map(|v| {
        let d = doc(&format!("{} (`{}`)", v.description, v.value));
        let vn = &v.name;
        quote! { #d #vn }
    });
    let to = e.values.iter().map(|v| {
        let (vn, value) = (&v.name, v.value);
        quote! { #name::#vn => #value }
    });
    let from = e.values.iter().map(|v| {
        let (vn, value) = (&v.name, v.value);
        quote! { #value => #name::#vn }
    });
    quote! {
        #enum_doc
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum #name {
            #(#variants,)*
            /// A value the spec does not name, as received. [`Self::from_value`] never makes
            /// one of a named value.
            Unknown(i64),
        }

        impl #name {
            /// The value on the wire.
            pub fn value(self) -> i64 {
                match self { #(#to,)* #name::Unknown(value) => value }
            }

            /// The variant for a value on the wire.
            pub fn from_value(value: i64) -> Self {
                match value { #(#from,)* value => #name::Unknown(value) }
            }
        }

        impl ::serde::Serialize for #name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> ::core::result::Result<S::Ok, S::Error> {
                serializer.serialize_i64(self.value())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for #name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> ::core::result::Result<Self, D::Error> {
                <i64 as ::serde::Deserialize>::deserialize(deserializer).map(#name::from_value)
            }
        }
    }
}

fn union_enum(u: &Union) -> TokenStream {
    let enum_name = &u.enum_name;
    let unknown = u.side == Side::Response;
    let mut enum_text = format!(
        "{}\n\nOn the wire, `{}` selects the variant.",
        u.description, u.tag_wire
    );
    if unknown {
        enum_text.push_str(&format!(
            " A `{}` the spec does not know is kept as `Unknown`, so that it cannot fail the rest of the answer.",
            u.tag_wire
        ));
    }
    let enum_doc = doc(&enum_text);
    let variants = u.variants.iter().map(|v| {
        let doc = doc(&format!("{} (`{}: {}`)", v.description, u.tag_wire, v.tag));
        let name = &v.name;
        let fields = v.fields.iter().map(|f| variant_field_decl(f, u.side));
        quote! { #doc #name { #(#fields,)* } }
    });
    let tags = u.variants.iter().map(|v| {
        let (name, tag) = (&v.name, v.tag);
        quote! { #enum_name::#name { .. } => #tag }
    });
    let unknown_decl = unknown.then(|| {
        let d = format!(" A `{}` the spec does not know.", u.tag_wire);
        quote! {
            #[doc = #d]
            Unknown {
                /// The tag as received.
                tag: i64,
            },
        }
    });
    let unknown_tag = unknown.then(|| quote! { #enum_name::Unknown { tag } => *tag, });
    let tag_doc = format!(" The value of `{}` on the wire.", u.tag_wire);
    quote! {
        #enum_doc
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum #enum_name {
            #(#variants,)*
            #unknown_decl
        }

        impl #enum_name {
            #[doc = #tag_doc]
            pub fn tag(&self) -> i64 {
                match self { #(#tags,)* #unknown_tag }
            }
        }
    }
}

/// A struct read from the server: its declaration, wire-name constants and `Deserialize`.
fn response_object(name: &Ident, doc: &TokenStream, items: &[Item]) -> TokenStream {
    let decls = items.iter().map(|item| match item {
        Item::Field(f) => field_decl(f, Side::Response),
        Item::Union(u) => {
            let (rust, enum_name) = (&u.rust, &u.enum_name);
            let d = crate::codegen::doc(&u.description);
            quote! { #d pub #rust: #enum_name }
        }
    });
    let consts = wire_consts(name, items);
    let de = deserialize_object(name, items);
    quote! {
        #doc
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct #name {
            #(#decls,)*
        }

        #consts

        #de
    }
}

fn slot(f: &Field) -> Ident {
    format_ident!("field_{}", f.rust)
}

/// What the visitor reads for a field, and how it turns its slot into the struct's value.
fn read_and_finish(f: &Field) -> (TokenStream, TokenStream) {
    let base = base_type(&f.ty);
    let (wire, slot) = (&f.wire, slot(f));
    if f.required {
        (
            base,
            quote! { ::timctl_core::api::decode::required(#slot, #wire)? },
        )
    } else if empty_when_absent(f, Side::Response) {
        (
            quote!(::core::option::Option<#base>),
            quote! { #slot.flatten().unwrap_or_default() },
        )
    } else {
        (
            quote!(::core::option::Option<#base>),
            quote! { #slot.flatten() },
        )
    }
}

/// A hand-written `Deserialize`: serde's derive cannot read a union keyed by an integer tag
/// next to plain fields. Unknown keys are skipped; a repeated key is an error, as with derive;
/// an optional field may also be `null`.
fn deserialize_object(name: &Ident, items: &[Item]) -> TokenStream {
    let mut slots = Vec::new();
    let mut arms = Vec::new();
    let mut finish = Vec::new();
    let read = |f: &Field, slots: &mut Vec<TokenStream>, arms: &mut Vec<TokenStream>| {
        let (ty, done) = read_and_finish(f);
        let (wire, slot) = (&f.wire, slot(f));
        slots.push(
            quote! { let mut #slot: ::core::option::Option<#ty> = ::core::option::Option::None; },
        );
        arms.push(quote! {
            #wire => ::timctl_core::api::decode::once(&mut #slot, map.next_value::<#ty>()?, #wire)?,
        });
        done
    };
    for item in items {
        match item {
            Item::Field(f) => {
                let done = read(f, &mut slots, &mut arms);
                let rust = &f.rust;
                finish.push(quote! { #rust: #done });
            }
            Item::Union(u) => {
                let (tag_wire, enum_name, rust) = (&u.tag_wire, &u.enum_name, &u.rust);
                let tag_slot = format_ident!("tag_{}", u.rust);
                slots.push(quote! { let mut #tag_slot: ::core::option::Option<i64> = ::core::option::Option::None; });
                arms.push(quote! {
                    #tag_wire => ::timctl_core::api::decode::once(&mut #tag_slot, map.next_value::<i64>()?, #tag_wire)?,
                });
                let mut variant_arms = Vec::new();
                for v in &u.variants {
                    let mut inits = Vec::new();
                    for f in &v.fields {
                        let done = read(f, &mut slots, &mut arms);
                        let fr = &f.rust;
                        inits.push(quote! { #fr: #done });
                    }
                    let (vn, tag) = (&v.name, v.tag);
                    variant_arms.push(quote! { #tag => #enum_name::#vn { #(#inits,)* } });
                }
                finish.push(quote! {
                    #rust: match ::timctl_core::api::decode::required(#tag_slot, #tag_wire)? {
                        #(#variant_arms,)*
                        tag => #enum_name::Unknown { tag },
                    }
                });
            }
        }
    }
    let expecting = format!("a {name} JSON object");
    quote! {
        impl<'de> ::serde::Deserialize<'de> for #name {
            fn deserialize<__D: ::serde::Deserializer<'de>>(deserializer: __D) -> ::core::result::Result<Self, __D::Error> {
                struct Visitor;
                impl<'de> ::serde::de::Visitor<'de> for Visitor {
                    type Value = #name;
                    fn expecting(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                        f.write_str(#expecting)
                    }
                    fn visit_map<__A: ::serde::de::MapAccess<'de>>(self, mut map: __A) -> ::core::result::Result<#name, __A::Error> {
                        #(#slots)*
                        while let ::core::option::Option::Some(key) = map.next_key::<::std::string::String>()? {
                            match key.as_str() {
                                #(#arms)*
                                _ => {
                                    map.next_value::<::serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        ::core::result::Result::Ok(#name { #(#finish,)* })
                    }
                }
                deserializer.deserialize_map(Visitor)
            }
        }
    }
}

/// The names one endpoint's generated items share.
struct Names {
    endpoint: Ident,
    request: Ident,
    response: Ident,
    error: Ident,
}

impl Names {
    fn of(e: &Endpoint) -> Self {
        let name = &e.name;
        Names {
            endpoint: name.clone(),
            request: format_ident!("{}Request", name),
            response: format_ident!("{}Response", name),
            error: format_ident!("{}Error", name),
        }
    }
}

/// Everything one endpoint spec generates: the marker type, the request, the nested types, the
/// response, the error and the `Endpoint` impl that ties them together.
fn endpoint(e: &Endpoint) -> TokenStream {
    let names = Names::of(e);
    let marker = marker_type(e);
    let request = request_type(e, &names);
    let response_doc = doc(&format!(
        "The response body of [`{}`]. Fields the spec does not list are ignored.\n\nParsing only reads it: [`::timctl_core::api::Endpoint::into_result`] decides whether it is a success.",
        names.endpoint
    ));
    let response = response_object(&names.response, &response_doc, &e.response);
    let error = error_type(e, &names);
    let endpoint_impl = endpoint_impl(e, &names);
    quote! {
        #marker
        #request
        #response
        #error
        #endpoint_impl
    }
}

/// The endpoint's marker type, documented with its summary, path and rate.
fn marker_type(e: &Endpoint) -> TokenStream {
    let (name, path, rate) = (&e.name, &e.path, e.calls_per_second);
    let mut endpoint_doc = e.summary.clone();
    if let Some(d) = &e.description {
        endpoint_doc.push_str("\n\n");
        endpoint_doc.push_str(d);
    }
    endpoint_doc.push_str(&format!(
        "\n\n`POST https://HOST/{path}`, at most {rate} calls per second."
    ));
    let endpoint_doc = doc(&endpoint_doc);
    quote! {
        #endpoint_doc
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct #name;
    }
}

/// The request struct (plain fields become struct fields; a union becomes one field of its
/// enum type), its wire-name constants, the nested types of request and response, and the
/// hand-ordered `Serialize` that writes keys in the documented order.
fn request_type(e: &Endpoint, names: &Names) -> TokenStream {
    let (name, request) = (&names.endpoint, &names.request);
    let mut decls = Vec::new();
    let mut writes = Vec::new();
    for item in &e.request {
        match item {
            Item::Field(f) => {
                decls.push(field_decl(f, Side::Request));
                let rust = &f.rust;
                writes.push(serialize_field(f, quote!(&self.#rust)));
            }
            Item::Union(u) => {
                let (rust, enum_name) = (&u.rust, &u.enum_name);
                let d = doc(&u.description);
                decls.push(quote! { #d pub #rust: #enum_name });
                let tag_wire = &u.tag_wire;
                let arms = u.variants.iter().map(|v| {
                    let vname = &v.name;
                    let binds: Vec<&Ident> = v.fields.iter().map(|f| &f.rust).collect();
                    let tag = v.tag;
                    let puts = v.fields.iter().map(|f| {
                        let b = &f.rust;
                        serialize_field(f, quote!(#b))
                    });
                    quote! {
                        #enum_name::#vname { #(#binds),* } => {
                            map.serialize_entry(#tag_wire, &#tag)?;
                            #(#puts)*
                        }
                    }
                });
                let rust = &u.rust;
                writes.push(quote! { match &self.#rust { #(#arms)* } });
            }
        }
    }
    let mut nested = Vec::new();
    nested_types(&e.request, &mut nested);
    nested_types(&e.response, &mut nested);
    let request_doc = format!(
        " The request body of [`{name}`]. Serialises to the documented JSON, keys in the documented order."
    );
    let request_consts = wire_consts(request, &e.request);
    quote! {
        #[doc = #request_doc]
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct #request {
            #(#decls,)*
        }

        #request_consts

        #(#nested)*

        impl ::serde::Serialize for #request {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> ::core::result::Result<S::Ok, S::Error> {
                use ::serde::ser::SerializeMap as _;
                let mut map = serializer.serialize_map(::core::option::Option::None)?;
                #(#writes)*
                map.end()
            }
        }
    }
}

/// The error enum: one variant per code the spec describes, `NotOk` and `Unknown`, with
/// `ApiError` (code, class, meaning, action, info), `Display` and `Error`.
fn error_type(e: &Endpoint, names: &Names) -> TokenStream {
    let (name, error) = (&names.endpoint, &names.error);
    let variants = e.errors.iter().map(|c| {
        let d = doc(&format!("{}: {}\n\n{}", c.code, c.meaning, c.action));
        let v = &c.variant;
        quote! { #d #v { #[doc = " The server's ErrorInfo."] info: ::std::string::String } }
    });
    let from_code = e.errors.iter().map(|c| {
        let (v, code) = (&c.variant, c.code);
        quote! { #code => #error::#v { info } }
    });
    let codes: Vec<i64> = e.errors.iter().map(|c| c.code).collect();
    let arms = |f: &dyn Fn(&crate::model::ErrorCode) -> TokenStream| -> Vec<TokenStream> {
        e.errors
            .iter()
            .map(|c| {
                let v = &c.variant;
                let body = f(c);
                quote! { #error::#v { .. } => #body }
            })
            .collect()
    };
    let code_arms = arms(&|c| {
        let code = c.code;
        quote!(#code)
    });
    let class_arms = arms(&|c| {
        let class = match c.class {
            Class::Retry => quote!(Retry),
            Class::Fatal => quote!(Fatal),
            Class::Item => quote!(Item),
            Class::AlreadyAbsent => quote!(AlreadyAbsent),
        };
        quote!(::timctl_core::api::ErrorClass::#class)
    });
    let meaning_arms = arms(&|c| {
        let m = &c.meaning;
        quote!(#m)
    });
    let action_arms = arms(&|c| {
        let a = &c.action;
        quote!(#a)
    });
    let info_arms = e.errors.iter().map(|c| {
        let v = &c.variant;
        quote! { #error::#v { info } => info }
    });
    let error_doc = format!(
        " A non-zero `ErrorCode` from [`{name}`]: one variant per code the spec describes (the endpoint's own, then the public ones), and `Unknown` for any other."
    );

    quote! {
        #[doc = #error_doc]
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum #error {
            #(#variants,)*
            /// `ErrorCode` 0 without `ActionStatus` OK (a `FAIL` with code 0, or no status at
            /// all). Success needs both, so this is a failure; with no code to say otherwise it
            /// is transient.
            NotOk {
                /// The `ActionStatus` as received (empty when absent).
                status: ::std::string::String,
                /// The server's ErrorInfo.
                info: ::std::string::String,
            },
            /// A code the spec does not describe. Treated as a failure of this item only; if
            /// it turns out to mean something else, describing it is a spec edit.
            Unknown {
                /// The code as received.
                code: i64,
                /// The server's ErrorInfo.
                info: ::std::string::String,
            },
        }

        impl #error {
            /// Every code the spec describes for this endpoint.
            pub const CODES: &'static [i64] = &[#(#codes),*];

            /// The typed error for a non-zero code and its ErrorInfo.
            pub fn from_code(code: i64, info: ::std::string::String) -> Self {
                match code {
                    #(#from_code,)*
                    code => #error::Unknown { code, info },
                }
            }
        }

        impl ::timctl_core::api::ApiError for #error {
            fn code(&self) -> i64 {
                match self { #(#code_arms,)* #error::NotOk { .. } => 0, #error::Unknown { code, .. } => *code }
            }
            fn class(&self) -> ::timctl_core::api::ErrorClass {
                match self {
                    #(#class_arms,)*
                    #error::NotOk { .. } => ::timctl_core::api::ErrorClass::Retry,
                    #error::Unknown { .. } => ::timctl_core::api::ErrorClass::Item,
                }
            }
            fn meaning(&self) -> &'static str {
                match self {
                    #(#meaning_arms,)*
                    #error::NotOk { .. } => "The answer has ErrorCode 0 but not ActionStatus OK.",
                    #error::Unknown { .. } => "an error code the spec does not describe",
                }
            }
            fn action(&self) -> &'static str {
                match self {
                    #(#action_arms,)*
                    #error::NotOk { .. } => "Retry with backoff: only ActionStatus OK with ErrorCode 0 is a success.",
                    #error::Unknown { .. } => "Report the item and go on with the others.",
                }
            }
            fn info(&self) -> &str {
                match self { #(#info_arms,)* #error::NotOk { info, .. } | #error::Unknown { info, .. } => info }
            }
        }

        impl ::core::fmt::Display for #error {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                use ::timctl_core::api::ApiError as _;
                ::core::write!(f, "{} ({})", self.meaning(), self.code())?;
                if !self.info().is_empty() {
                    ::core::write!(f, ": {}", self.info())?;
                }
                Ok(())
            }
        }

        impl ::std::error::Error for #error {}
    }
}

/// `impl Endpoint`: the name, path and rate, and `into_result`, which decides success from the
/// roles the spec gives the response's fields.
fn endpoint_impl(e: &Endpoint, names: &Names) -> TokenStream {
    let Names {
        endpoint: name,
        request,
        response,
        error,
    } = names;
    let (path, rate, name_str) = (&e.path, e.calls_per_second, name.to_string());
    let roles = &e.roles;
    let code_field = &roles.error_code;
    let status_field = &roles.action_status;
    let info = match &roles.error_info {
        Some(f) => quote! { response.#f.clone().unwrap_or_default() },
        None => quote! { ::std::string::String::new() },
    };
    let (is_ok, status_text) = if roles.action_status_required {
        (
            quote! { response.#status_field == "OK" },
            quote! { response.#status_field.clone() },
        )
    } else {
        (
            quote! { response.#status_field.as_deref() == ::core::option::Option::Some("OK") },
            quote! { response.#status_field.clone().unwrap_or_default() },
        )
    };
    quote! {
        impl ::timctl_core::api::Endpoint for #name {
            const NAME: &'static str = #name_str;
            const PATH: &'static str = #path;
            const CALLS_PER_SECOND: u32 = #rate;
            type Request = #request;
            type Response = #response;
            type Error = #error;

            /// Success is `ActionStatus` OK and `ErrorCode` 0, by the roles the spec gives those
            /// fields; a non-zero code is its typed error, and code 0 without OK is `NotOk`.
            fn into_result(response: #response) -> ::core::result::Result<#response, #error> {
                if response.#code_field != 0 {
                    let info = #info;
                    return ::core::result::Result::Err(#error::from_code(response.#code_field, info));
                }
                if #is_ok {
                    ::core::result::Result::Ok(response)
                } else {
                    let info = #info;
                    ::core::result::Result::Err(#error::NotOk { status: #status_text, info })
                }
            }
        }
    }
}
