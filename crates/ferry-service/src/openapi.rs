//! What every service's OpenAPI document declares beyond what its handlers annotate, and the
//! `/docs` page that renders it.
//!
//! Every service answers the same ways outside its handlers: a path parameter it cannot read is
//! 400, a `Host` it does not serve 403, an unknown id 404, a body over the limit 413, a body
//! that is not JSON 415, a field out of bounds 422, a dependency down 503, our fault 500, always
//! in the error shape. [`complete`] writes that into the document once, for every operation,
//! instead of 22 handlers forgetting it: each `{name}` in a path becomes a declared path
//! parameter, and each of those statuses a response with the `Error` schema. A client
//! generator or a fuzzer (schemathesis in `.ci/run`) then knows every answer it can get.
//!
//! `/docs` is a small viewer compiled into the binary (`docs/index.html`: plain HTML and
//! script, no CDN, nothing fetched at build time) that renders `openapi.json` next to it.

use serde_json::{Value, json};

/// The page served at `/docs`.
pub const DOCS_PAGE: &str = include_str!("docs/index.html");

/// Statuses any operation may answer, and why.
const ANY: &[(&str, &str)] = &[
    (
        "400",
        "the request is malformed (a path parameter, a query parameter, a header)",
    ),
    ("403", "the Host header is not an IP address or localhost"),
    ("404", "no such resource"),
    ("500", "a fault of ours"),
    (
        "503",
        "a dependency (database, broker) is not available; retry later",
    ),
];

/// Statuses an operation with a request body may also answer.
const WITH_BODY: &[(&str, &str)] = &[
    ("409", "conflicts with existing state"),
    ("413", "the body is larger than the service accepts"),
    (
        "415",
        "the body is not JSON (Content-Type: application/json)",
    ),
    ("422", "a field is missing, out of bounds or breaks a rule"),
];

/// Adds the error schema, the path parameters and the error responses every operation can
/// answer with to `spec` (an OpenAPI 3.1 document as JSON).
pub fn complete(spec: &mut Value) {
    let schemas = &mut spec["components"]["schemas"];
    if !schemas.is_object() {
        *schemas = json!({});
    }
    schemas["Error"] = json!({
        "type": "object",
        "description": "Every error answer: a stable code and a message for people.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "stable, e.g. invalid_field, not_found"},
                    "message": {"type": "string"}
                }
            }
        }
    });
    let Some(paths) = spec.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let names: Vec<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !["get", "post", "put", "delete", "patch", "head"].contains(&method.as_str()) {
                continue;
            }
            declare_path_parameters(op, &names);
            let with_body = op.get("requestBody").is_some();
            let statuses = ANY.iter().chain(if with_body { WITH_BODY } else { &[] });
            let responses = &mut op["responses"];
            if !responses.is_object() {
                *responses = json!({});
            }
            for (status, description) in statuses {
                let response = &mut responses[*status];
                if !response.is_object() {
                    *response = json!({"description": description});
                }
                response["content"] = error_content();
            }
            // Statuses a handler declared without a body (`(status = 404)`): the error shape too.
            if let Some(all) = responses.as_object_mut() {
                for (status, response) in all.iter_mut() {
                    if (status.starts_with('4') || status.starts_with('5'))
                        && response.get("content").is_none()
                    {
                        response["content"] = error_content();
                    }
                }
            }
        }
    }
}

fn error_content() -> Value {
    json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})
}

/// Declares each of `names` as a required string path parameter of `op`, unless it is.
fn declare_path_parameters(op: &mut Value, names: &[String]) {
    let parameters = &mut op["parameters"];
    if !parameters.is_array() {
        *parameters = json!([]);
    }
    let Some(list) = parameters.as_array_mut() else {
        return;
    };
    for name in names {
        let declared = list
            .iter()
            .any(|p| p["in"] == "path" && p["name"] == name.as_str());
        if !declared {
            list.push(json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": {"type": "string"}
            }));
        }
    }
    if list.is_empty() {
        op.as_object_mut().map(|o| o.remove("parameters"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_and_error_answers_are_declared() {
        let mut spec = json!({
            "openapi": "3.1.0",
            "paths": {
                "/things/{id}": {
                    "get": {"responses": {"200": {"description": "ok"}, "404": {"description": "none"}}},
                    "put": {"requestBody": {"content": {}}, "parameters": [
                        {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}
                    ], "responses": {}}
                }
            }
        });
        complete(&mut spec);
        let get = &spec["paths"]["/things/{id}"]["get"];
        assert_eq!(get["parameters"][0]["name"], "id");
        assert_eq!(get["parameters"][0]["required"], true);
        assert_eq!(
            get["responses"]["404"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        assert_eq!(get["responses"]["404"]["description"], "none");
        assert!(get["responses"]["413"].is_null(), "no body, no 413");
        let put = &spec["paths"]["/things/{id}"]["put"];
        assert_eq!(
            put["parameters"].as_array().unwrap().len(),
            1,
            "kept, not doubled"
        );
        assert_eq!(put["parameters"][0]["schema"]["type"], "integer");
        for status in ["400", "409", "413", "415", "422", "500", "503"] {
            assert!(put["responses"][status].is_object(), "{status}");
        }
        assert!(spec["components"]["schemas"]["Error"].is_object());
    }
}
