//! A JSON Schema (draft 2020-12) of the bodies a plan accepts, for
//! producers (`veil contract export --json-schema`): nested objects from
//! the columns' pointers, each leaf's type and checks, the route's value
//! as a constant, one `oneOf` branch per contract. It says what veil
//! accepts; veil's own parser stays the judge (a schema validator and veil
//! may differ on Unicode lengths or regex dialects).

use serde_json::{json, Map, Value};

use super::extract::tokens;
use super::{Column, ColumnSource, ColumnType, Contract, Plan};

/// The schema of the bodies of every contract of the plan.
pub fn export(plan: &Plan) -> Value {
    let branches: Vec<Value> = plan.contracts.iter().map(contract_schema).collect();
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "veil event bodies",
    });
    let body = match <[Value; 1]>::try_from(branches) {
        Ok([single]) => single,
        Err(branches) => json!({ "oneOf": branches }),
    };
    merge(&mut schema, body);
    schema
}

fn merge(target: &mut Value, source: Value) {
    if let (Value::Object(target), Value::Object(source)) = (target, source) {
        target.extend(source);
    }
}

fn contract_schema(contract: &Contract) -> Value {
    let mut root = object_node();
    root["description"] = json!(format!(
        "contract {} version {}",
        contract.name, contract.version
    ));
    if let Some(route) = &contract.route {
        insert(
            &mut root,
            &tokens(&route.pointer).collect::<Vec<_>>(),
            json!({ "const": route.equals }),
            true,
        );
    }
    for column in &contract.columns {
        if let ColumnSource::Body(pointer) = &column.source {
            insert(
                &mut root,
                &tokens(pointer).collect::<Vec<_>>(),
                leaf(column),
                column.required,
            );
        }
    }
    root
}

fn object_node() -> Value {
    json!({ "type": "object", "properties": {}, "required": [] })
}

fn insert(node: &mut Value, path: &[String], leaf: Value, required: bool) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if required {
        if let Some(list) = node["required"].as_array_mut() {
            if !list.iter().any(|v| v == first.as_str()) {
                list.push(json!(first));
            }
        }
    }
    // A node without properties is a leaf some column reads whole (both
    // `/user` and `/user/email` are read): its schema already covers what
    // lies below.
    let Some(properties) = node.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    if rest.is_empty() {
        properties.insert(first.clone(), leaf);
    } else {
        let child = properties.entry(first.clone()).or_insert_with(object_node);
        insert(child, rest, leaf, required);
    }
}

fn leaf(column: &Column) -> Value {
    let mut schema = Map::new();
    let nullable = !column.required;
    let base = match column.column_type {
        ColumnType::Text
        | ColumnType::Ip
        | ColumnType::Uuid
        | ColumnType::Date
        | ColumnType::Timestamptz
        | ColumnType::VersionMajor => "string",
        ColumnType::Integer | ColumnType::Bigint => "integer",
        ColumnType::Numeric => "number",
        ColumnType::Boolean => "boolean",
        ColumnType::Jsonb => {
            return json!({ "not": { "type": "null" } });
        }
    };
    let format = match column.column_type {
        ColumnType::Uuid => Some("uuid"),
        ColumnType::Date => Some("date"),
        ColumnType::Timestamptz => Some("date-time"),
        _ => None,
    };
    let types = if nullable {
        json!([base, "null"])
    } else {
        json!(base)
    };
    schema.insert("type".into(), types);
    if let Some(format) = format {
        schema.insert("format".into(), json!(format));
    }
    if column.column_type == ColumnType::VersionMajor {
        schema.insert("pattern".into(), json!("^[0-9]+(\\.[0-9]+){0,3}$"));
    }
    if let Some(pattern) = &column.pattern {
        schema.insert("pattern".into(), json!(pattern.as_str()));
    }
    if let Some(max) = column.max_chars {
        schema.insert("maxLength".into(), json!(max));
    }
    if column.required && base == "string" {
        schema.insert("minLength".into(), json!(1));
    }
    if let Some(allowed) = &column.allowed {
        schema.insert("enum".into(), json!(allowed));
    }
    if let Some(min) = column.min {
        schema.insert("minimum".into(), json!(min));
    }
    if let Some(max) = column.max {
        schema.insert("maximum".into(), json!(max));
    }
    if column.pii.is_some() {
        schema.insert(
            "description".into(),
            json!("personal data: veil stores only its mask"),
        );
    }
    Value::Object(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_read_whole_and_one_read_inside_it_make_one_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        let text = "contract: c\nversion: 1\ncolumns:\n  - {name: profile, from: /user, type: jsonb}\n  - {name: masked_email, from: /user/email, type: text, pii: siv, domain: email}\n";
        std::fs::write(&path, text).unwrap();
        let schema = export(&crate::contract::load(&path).unwrap());
        assert_eq!(
            schema["properties"]["user"],
            json!({"not": {"type": "null"}})
        );
    }

    #[test]
    fn the_login_schema_requires_the_login_fields_and_allows_a_null_locale() {
        let schema = export(&crate::contract::builtin_login());
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            required,
            ["user_id", "device_type", "ip", "device_id", "app_version"]
        );
        assert_eq!(
            schema["properties"]["locale"]["type"],
            json!(["string", "null"])
        );
        assert_eq!(schema["properties"]["user_id"]["maxLength"], json!(128));
    }
}
