//! The API's own description as a test oracle: every reply the black-box tests receive is checked
//! against the JSON schema `/openapi.json` declares for its route and status, so the document
//! cannot promise a shape the server does not send.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use jsonschema::error::ValidationErrorKind;
use serde_json::{json, Value};

/// `/openapi.json`, with a cache of compiled schemas and a tally of what was checked.
pub struct OpenApi {
    doc: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
    tally: Mutex<Tally>,
}

/// What the document declares for one `(method, path, status)`.
#[derive(Debug)]
pub enum Declared<'a> {
    /// An `application/json` body with this schema, on the route `template`.
    Json { template: &'a str, schema: &'a Value },
    /// A response whose body is not JSON (`text/csv`, NDJSON, Prometheus text).
    NotJson { template: &'a str, content_type: &'a str },
    /// A response without a body (204).
    NoBody { template: &'a str },
    /// The route is documented, this status is not.
    UndeclaredStatus { template: &'a str },
    /// No documented route serves this method and path.
    UndocumentedRoute,
}

/// How many replies were validated, and why the others were not.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub validated: usize,
    /// `"METHOD template status: reason"` → how often.
    pub skipped: BTreeMap<String, usize>,
}

impl OpenApi {
    pub fn new(doc: Value) -> OpenApi {
        assert!(doc["paths"].is_object(), "/openapi.json has no paths: {doc}");
        OpenApi { doc, validators: Mutex::default(), tally: Mutex::default() }
    }

    /// The document's path template that routes `path`, as the router would pick it: segments
    /// like `{id}` match any one segment, and a literal segment wins over a parameter in the same
    /// place (`/profiles/lookup` over `/profiles/{id}`).
    pub fn template(&self, path: &str) -> Option<&str> {
        let wanted: Vec<&str> = path.split('/').collect();
        let paths = self.doc["paths"].as_object()?;
        paths
            .keys()
            .filter_map(|template| {
                let segments: Vec<&str> = template.split('/').collect();
                if segments.len() != wanted.len() {
                    return None;
                }
                // One flag per segment, `true` for a parameter: the smallest vector is the most
                // literal match, comparing from the left as a router does.
                let mut params = Vec::with_capacity(segments.len());
                for (pattern, actual) in segments.iter().zip(&wanted) {
                    let param = pattern.starts_with('{') && pattern.ends_with('}');
                    if !param && pattern != actual {
                        return None;
                    }
                    params.push(param);
                }
                Some((params, template.as_str()))
            })
            .min()
            .map(|(_, template)| template)
    }

    /// What the document declares for a reply with `status` to `method path`.
    pub fn declared(&self, method: &str, path: &str, status: u16) -> Declared<'_> {
        let Some(template) = self.template(path) else { return Declared::UndocumentedRoute };
        let operation = &self.doc["paths"][template][method.to_ascii_lowercase()];
        let Some(responses) = operation["responses"].as_object() else { return Declared::UndocumentedRoute };
        let range = format!("{}XX", status / 100);
        let Some(response) = [status.to_string(), range, "default".to_string()].iter().find_map(|k| responses.get(k))
        else {
            return Declared::UndeclaredStatus { template };
        };
        let response = self.resolve(response);
        let Some(content) = response["content"].as_object().filter(|c| !c.is_empty()) else {
            return Declared::NoBody { template };
        };
        let json = content.iter().find(|(media, _)| media.split(';').next().map(str::trim) == Some("application/json"));
        match json {
            Some((_, media)) => Declared::Json { template, schema: &media["schema"] },
            None => Declared::NotJson { template, content_type: content.keys().next().map_or("", String::as_str) },
        }
    }

    /// Validates `instance` against `schema`, a schema taken from the document (an inline one or
    /// `{"$ref": "#/components/schemas/X"}`); its local references resolve against the document's
    /// components. `Err` lists every failure as `at <JSON pointer>: <error> (schema <pointer>)`.
    pub fn validate(&self, schema: &Value, instance: &Value) -> Result<(), Vec<String>> {
        let validator = self.validator(schema);
        let mut errors = Vec::new();
        for error in validator.iter_errors(instance) {
            describe(&error, 0, &mut errors);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Checks one reply: `Ok` when it matches or the document declares no JSON body for it
    /// (counted either way), `Err` with a message naming the request, the failures and the body.
    pub fn check(&self, method: &str, path: &str, status: u16, content_type: &str, body: &str) -> Result<(), String> {
        let (template, schema) = match self.declared(method, path, status) {
            Declared::Json { template, schema } => (template, schema),
            other => {
                self.skip(method, path, status, &other);
                return Ok(());
            }
        };
        let mismatch = |why: String| {
            format!(
                "{method} {path} answered {status}, which does not match /openapi.json \
                 ({method} {template} → {status}, application/json):\n{why}\nbody: {body}"
            )
        };
        if !content_type.starts_with("application/json") {
            return Err(mismatch(format!("the reply's content type is {content_type:?}")));
        }
        let instance: Value = serde_json::from_str(body).map_err(|e| mismatch(format!("the body is not JSON: {e}")))?;
        self.validate(schema, &instance).map_err(|errors| mismatch(errors.join("\n")))?;
        self.tally.lock().expect("tally lock").validated += 1;
        Ok(())
    }

    /// A copy of the tally so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().expect("tally lock").clone()
    }

    fn skip(&self, method: &str, path: &str, status: u16, declared: &Declared<'_>) {
        let key = match declared {
            Declared::NotJson { template, content_type } => format!("{method} {template} {status}: {content_type}"),
            Declared::NoBody { template } => format!("{method} {template} {status}: no body declared"),
            Declared::UndeclaredStatus { template } => format!("{method} {template} {status}: status not declared"),
            Declared::UndocumentedRoute => format!("{method} {path}: route not documented"),
            Declared::Json { .. } => unreachable!("a JSON response is validated, not skipped"),
        };
        *self.tally.lock().expect("tally lock").skipped.entry(key).or_default() += 1;
    }

    /// A response object, following a `$ref` into `components/responses`.
    fn resolve<'a>(&'a self, response: &'a Value) -> &'a Value {
        match response["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => self.doc.pointer(pointer).unwrap_or(&Value::Null),
            None => response,
        }
    }

    /// A compiled validator for `schema` (cached; schemas repeat across the suite's replies). The
    /// schema is compiled inside a root that carries the document's components, so
    /// `#/components/schemas/X` resolves without any retrieval.
    fn validator(&self, schema: &Value) -> Arc<jsonschema::Validator> {
        let key = schema.to_string();
        if let Some(validator) = self.validators.lock().expect("validator cache lock").get(&key) {
            return validator.clone();
        }
        let components = self.doc["components"].clone();
        let root = match schema {
            Value::Object(fields) if !fields.contains_key("components") => {
                let mut root = fields.clone();
                root.insert("components".to_string(), components);
                Value::Object(root)
            }
            _ => json!({ "allOf": [schema], "components": components }),
        };
        let validator = jsonschema::draft202012::options()
            .build(&root)
            .unwrap_or_else(|e| panic!("a schema in /openapi.json does not compile: {e}\nschema: {schema}"));
        let validator = Arc::new(validator);
        self.validators.lock().expect("validator cache lock").insert(key, validator.clone());
        validator
    }
}

/// `error` as `at <pointer>: <error> (schema <pointer>)`, followed, for a `oneOf` or `anyOf` that
/// no branch satisfied, by each branch's own errors indented below it: "not valid under any of
/// the schemas" alone does not say which field broke a nullable `$ref`.
fn describe(error: &jsonschema::ValidationError<'_>, indent: usize, out: &mut Vec<String>) {
    let at = error.instance_path().as_str();
    let at = if at.is_empty() { "/" } else { at };
    out.push(format!("{:indent$}at {at}: {error} (schema {})", "", error.schema_path().as_str()));
    if let ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } = error.kind() {
        for (i, branch) in context.iter().enumerate() {
            out.push(format!("{:indent$}  branch {i}:", ""));
            for error in branch {
                describe(error, indent + 4, out);
            }
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let skipped: usize = self.skipped.values().sum();
        write!(f, "{} replies validated, {skipped} not validated", self.validated)?;
        for (why, n) in &self.skipped {
            write!(f, "\n  {n:>4} × {why}")?;
        }
        Ok(())
    }
}
