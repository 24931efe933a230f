//! The checks of a body's items: fields (with their types: named integers, arrays), unions
//! and their variants. Split from `model` to keep each file readable.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::{
    ArrayOf, Cx, EnumValue, Field, FieldType, IntEnum, Item, Object, Place, Role, Side, Union,
    Variant,
};
use crate::spec::{ArraySpec, ItemSpec};

impl Cx {
    /// The items of one JSON object: a request or response body (`top`), an array's struct,
    /// or a union variant.
    pub(super) fn items(
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
