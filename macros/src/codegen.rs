//! Turns the checked model into Rust. The output names `::serde`, `::schemars` and
//! `::timctl_core::api`, so the invoking crate must depend on serde and schemars, and be
//! `timctl-core` (which declares `extern crate self as timctl_core`) or depend on it.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::model::{Api, Class, Endpoint, Field, FieldType, Item, Region, Union};

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

fn rust_type(f: &Field) -> TokenStream {
    let base = match f.ty {
        FieldType::String => quote!(::std::string::String),
        FieldType::Integer => quote!(i64),
        FieldType::Bool01 => quote!(bool),
    };
    if f.required {
        base
    } else {
        quote!(::core::option::Option<#base>)
    }
}

fn field_decl(f: &Field) -> TokenStream {
    let doc = doc(&format!("`{}`: {}", f.wire, f.description));
    let (name, ty) = (&f.rust, rust_type(f));
    quote! { #doc pub #name: #ty }
}

/// A field without `pub`, as enum variants need.
fn variant_field_decl(f: &Field) -> TokenStream {
    let doc = doc(&format!("`{}`: {}", f.wire, f.description));
    let (name, ty) = (&f.rust, rust_type(f));
    quote! { #doc #name: #ty }
}

/// Writes one field into the open map `map`, reading it from the expression `value`
/// (a reference to the Rust value).
fn serialize_field(f: &Field, value: TokenStream) -> TokenStream {
    let wire = &f.wire;
    let put = |v: TokenStream| match f.ty {
        FieldType::Bool01 => quote! { map.serialize_entry(#wire, &u8::from(*#v))?; },
        FieldType::String | FieldType::Integer => quote! { map.serialize_entry(#wire, #v)?; },
    };
    if f.required {
        put(value)
    } else {
        let inner = put(quote!(inner));
        quote! { if let ::core::option::Option::Some(inner) = #value { #inner } }
    }
}

fn union_enum(u: &Union) -> TokenStream {
    let enum_name = &u.enum_name;
    let enum_doc = doc(&format!(
        "{}\n\nOn the wire, `{}` selects the variant.",
        u.description, u.tag_wire
    ));
    let variants = u.variants.iter().map(|v| {
        let doc = doc(&format!("{} (`{}: {}`)", v.description, u.tag_wire, v.tag));
        let name = &v.name;
        let fields = v.fields.iter().map(variant_field_decl);
        quote! { #doc #name { #(#fields,)* } }
    });
    let tags = u.variants.iter().map(|v| {
        let (name, tag) = (&v.name, v.tag);
        quote! { #enum_name::#name { .. } => #tag }
    });
    let tag_doc = format!(" The value of `{}` on the wire.", u.tag_wire);
    quote! {
        #enum_doc
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum #enum_name {
            #(#variants,)*
        }

        impl #enum_name {
            #[doc = #tag_doc]
            pub fn tag(&self) -> i64 {
                match self { #(#tags,)* }
            }
        }
    }
}

fn endpoint(e: &Endpoint) -> TokenStream {
    let name = &e.name;
    let request = format_ident!("{}Request", name);
    let response = format_ident!("{}Response", name);
    let error = format_ident!("{}Error", name);
    let path = &e.path;
    let rate = e.calls_per_second;
    let name_str = name.to_string();

    let mut endpoint_doc = e.summary.clone();
    if let Some(d) = &e.description {
        endpoint_doc.push_str("\n\n");
        endpoint_doc.push_str(d);
    }
    endpoint_doc.push_str(&format!(
        "\n\n`POST https://HOST/{path}`, at most {rate} calls per second."
    ));
    let endpoint_doc = doc(&endpoint_doc);

    // Request: plain fields become struct fields; a union becomes one field of its enum type.
    let mut decls = Vec::new();
    let mut unions = Vec::new();
    let mut writes = Vec::new();
    for item in &e.request {
        match item {
            Item::Field(f) => {
                decls.push(field_decl(f));
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
                unions.push(union_enum(u));
            }
        }
    }
    let request_doc = format!(
        " The request body of [`{name}`]. Serialises to the documented JSON, keys in the documented order."
    );

    // Response.
    let response_fields = e.response.iter().map(|f| {
        let doc = doc(&format!("`{}`: {}", f.wire, f.description));
        let (name, ty, wire) = (&f.rust, rust_type(f), &f.wire);
        if f.required {
            quote! { #doc #[serde(rename = #wire)] pub #name: #ty }
        } else {
            quote! { #doc #[serde(rename = #wire, default)] pub #name: #ty }
        }
    });
    let response_doc =
        format!(" The response body of [`{name}`]. Fields the spec does not list are ignored.");
    let code_field = &e.error_code_field;
    let info = match &e.error_info_field {
        Some(f) => quote! { response.#f.clone().unwrap_or_default() },
        None => quote! { ::std::string::String::new() },
    };

    // Errors.
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
        #endpoint_doc
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct #name;

        #[doc = #request_doc]
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct #request {
            #(#decls,)*
        }

        #(#unions)*

        impl ::serde::Serialize for #request {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> ::core::result::Result<S::Ok, S::Error> {
                use ::serde::ser::SerializeMap as _;
                let mut map = serializer.serialize_map(::core::option::Option::None)?;
                #(#writes)*
                map.end()
            }
        }

        #[doc = #response_doc]
        #[derive(Clone, Debug, PartialEq, Eq, ::serde::Deserialize)]
        pub struct #response {
            #(#response_fields,)*
        }

        #[doc = #error_doc]
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum #error {
            #(#variants,)*
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
                match self { #(#code_arms,)* #error::Unknown { code, .. } => *code }
            }
            fn class(&self) -> ::timctl_core::api::ErrorClass {
                match self { #(#class_arms,)* #error::Unknown { .. } => ::timctl_core::api::ErrorClass::Item }
            }
            fn meaning(&self) -> &'static str {
                match self { #(#meaning_arms,)* #error::Unknown { .. } => "an error code the spec does not describe" }
            }
            fn action(&self) -> &'static str {
                match self { #(#action_arms,)* #error::Unknown { .. } => "Report the item and go on with the others." }
            }
            fn info(&self) -> &str {
                match self { #(#info_arms,)* #error::Unknown { info, .. } => info }
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

        impl ::timctl_core::api::Endpoint for #name {
            const NAME: &'static str = #name_str;
            const PATH: &'static str = #path;
            const CALLS_PER_SECOND: u32 = #rate;
            type Request = #request;
            type Response = #response;
            type Error = #error;

            fn into_result(response: #response) -> ::core::result::Result<#response, #error> {
                if response.#code_field == 0 {
                    Ok(response)
                } else {
                    let info = #info;
                    Err(#error::from_code(response.#code_field, info))
                }
            }
        }
    }
}
