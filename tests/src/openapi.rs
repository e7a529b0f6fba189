//! Every response the tests get from the API, checked against the daemon's OpenAPI
//! document: the path and method are described, the status code too, and a JSON body is
//! valid against the schema the document gives it (JSON Schema, with the document as the
//! root of its `$ref`s). A hand-written document cannot drift from the handlers unnoticed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde_json::Value;

/// The document, as the daemon serves it, with OpenAPI 3.0's `nullable` written as JSON
/// Schema says it (`type: [T, "null"]`).
fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let text = include_str!("../../allowlist-daemon/src/api/openapi.json");
        let mut document: Value = serde_json::from_str(text).expect("the OpenAPI document");
        nullable_as_json_schema(&mut document);
        document
    })
}

fn nullable_as_json_schema(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.remove("nullable") == Some(Value::Bool(true)) {
                match object.get("type").cloned() {
                    Some(Value::String(kind)) => {
                        object.insert("type".into(), serde_json::json!([kind, "null"]));
                    }
                    _ => {
                        let schema = Value::Object(std::mem::take(object));
                        object.insert(
                            "anyOf".into(),
                            serde_json::json!([schema, { "type": "null" }]),
                        );
                    }
                }
            }
            object.values_mut().for_each(nullable_as_json_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_as_json_schema),
        _ => {}
    }
}

/// Whether the document's path template `template` (`/v1/allowlists/{id}`) matches `path`.
fn matches(template: &str, path: &str) -> bool {
    let (template, path): (Vec<&str>, Vec<&str>) =
        (template.split('/').collect(), path.split('/').collect());
    template.len() == path.len()
        && template
            .iter()
            .zip(&path)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

/// Checks a response to `method path` against the document: `Err` with what does not
/// match. A path the document does not describe is an error, as is a status code it does not
/// list for it (unless it lists `default`); a JSON body must be valid against its schema.
pub fn check(method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
    let document = document();
    let path = path.split('?').next().unwrap_or(path);
    let paths = document["paths"]
        .as_object()
        .ok_or("the document has no paths")?;
    // A literal path wins over a template (`/v1/allowlists/import` over `/{id}`).
    let described = paths
        .iter()
        .filter(|(template, _)| matches(template, path))
        .min_by_key(|(template, _)| template.matches('{').count())
        .map(|(template, item)| (template.clone(), item))
        .ok_or_else(|| format!("{method} {path}: not in the OpenAPI document"));
    let (template, item) = match described {
        Ok(described) => described,
        // What the API answers to a path it does not serve.
        Err(_) if status == 404 => return Ok(()),
        Err(why) => return Err(why),
    };
    let operation = &item[method.to_ascii_lowercase()];
    if operation.is_null() {
        return match status {
            404 | 405 => Ok(()),
            _ => Err(format!(
                "{method} {template}: no such operation in the document"
            )),
        };
    }
    let code = status.to_string();
    let pointer = match (
        &operation["responses"][&code],
        &operation["responses"]["default"],
    ) {
        (Value::Null, Value::Null) => {
            return Err(format!(
                "{method} {template}: status {status} is not among the responses the document \
                 lists"
            ));
        }
        (Value::Null, _) => "default".to_owned(),
        _ => code,
    };
    let response = resolve(document, &operation["responses"][&pointer]);
    let schema = &response["content"]["application/json"]["schema"];
    if schema.is_null() || body.is_null() {
        return Ok(());
    }
    // A JSON pointer in a URI fragment: `~` and `/` escaped, then braces percent-encoded.
    let escaped = template
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D");
    let method = method.to_ascii_lowercase();
    let root = match operation["responses"][&pointer]["$ref"].as_str() {
        Some(reference) => format!("{reference}/content/application~1json/schema"),
        None => format!(
            "#/paths/{escaped}/{method}/responses/{pointer}/content/application~1json/schema"
        ),
    };
    let validator = validator(&root)
        .map_err(|err| format!("the schema of {method} {template} {status}: {err}"))?;
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|err| format!("{} at {}", err, err.instance_path()))
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "{method} {template} {status}: the body does not match the document: {}",
            errors.join("; ")
        )),
    }
}

/// The validator of the schema at `root` (a pointer into the document), made once.
fn validator(root: &str) -> Result<Arc<jsonschema::Validator>, String> {
    static MADE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let mut made = MADE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(validator) = made.get(root) {
        return Ok(validator.clone());
    }
    let mut with_root = document().clone();
    with_root["$ref"] = Value::String(root.to_owned());
    let validator = Arc::new(
        jsonschema::draft202012::options()
            .build(&with_root)
            .map_err(|err| err.to_string())?,
    );
    made.insert(root.to_owned(), validator.clone());
    Ok(validator)
}

/// `value`, or what its `$ref` (within the document) points at.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => document.pointer(pointer).unwrap_or(&Value::Null),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check;

    #[test]
    fn a_response_that_drifted_from_the_document_is_found_out() {
        let drifted = check(
            "GET",
            "/v1/enforcement",
            200,
            &json!({ "enforcing": "yes" }),
        );
        assert!(
            drifted
                .as_ref()
                .is_err_and(|why| why.contains("/enforcing")),
            "{drifted:?}"
        );
        let list = "/v1/allowlists/al_1";
        assert!(check("GET", list, 404, &json!({ "error": { "code": 7 } })).is_err());
        assert!(
            check("GET", "/v1/nothing", 200, &json!({})).is_err(),
            "an unknown path"
        );
        assert!(
            check("GET", "/v1/enforcement", 418, &json!({})).is_err(),
            "a status"
        );
        assert!(
            check("GET", "/v1/nothing", 404, &json!({})).is_ok(),
            "a 404 is fine"
        );
    }
}
