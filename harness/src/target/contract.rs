//! [`Contract`]: the error answers each operation of a target documents, read from the OpenAPI
//! document it publishes. Every answer a run provokes is held to it, whatever the step expected: an
//! error status the operation does not list (exactly, as a range such as `4XX`, or as `default`),
//! or — where the response lists its stable codes in `x-error-codes` — a code it does not list, is
//! off-contract and fails the run. A response without `x-error-codes` documents its status alone,
//! as a plain OpenAPI document does. Codes are compared in Harbor's vocabulary: those a target
//! lists are renamed by its profile's `answers.codes`, as its answers are.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Codes that belong to Harbor's test protocol, not to any operation: a sync point that timed out.
const PROTOCOL_CODES: &[&str] = &["SYNC_POINT_TIMEOUT"];

/// One documented operation.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Operation {
    method: String,
    /// The path template, split at `/` (`{name}` segments match any non-empty segment).
    segments: Vec<String>,
    /// Error responses by the statuses they cover, and the stable codes each lists (`None`: it
    /// lists none, and any code passes with its status).
    errors: BTreeMap<Covers, Option<BTreeSet<String>>>,
}

/// The statuses one documented response covers, most precise first when ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Covers {
    /// One status (`409`).
    Status(u16),
    /// A class (`4XX`: 400–499).
    Class(u16),
    /// Every status the others do not (`default`).
    Default,
}

impl Covers {
    fn parse(key: &str) -> Option<Self> {
        if key == "default" {
            return Some(Covers::Default);
        }
        if let Ok(status) = key.parse::<u16>() {
            return Some(Covers::Status(status));
        }
        match key.as_bytes() {
            [d, b'X' | b'x', b'X' | b'x'] if d.is_ascii_digit() => {
                Some(Covers::Class(u16::from(d - b'0')))
            }
            _ => None,
        }
    }

    fn covers(self, status: u16) -> bool {
        match self {
            Covers::Status(s) => s == status,
            Covers::Class(c) => status / 100 == c,
            Covers::Default => true,
        }
    }

    fn is_error(self) -> bool {
        match self {
            Covers::Status(s) => s >= 400,
            Covers::Class(c) => c >= 4,
            Covers::Default => true,
        }
    }
}

/// The error answers of every documented operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contract {
    operations: Vec<Operation>,
}

impl Contract {
    /// Reads `document` (OpenAPI 3): every operation's 4xx/5xx responses and the codes each
    /// lists in `x-error-codes`.
    pub fn from_openapi(document: &Value) -> Result<Self, String> {
        Self::from_openapi_named(document, &BTreeMap::new())
    }

    /// The same, the listed codes renamed by `names` (the target's → Harbor's, a profile's
    /// `answers.codes`), as the target's answers are.
    pub fn from_openapi_named(
        document: &Value,
        names: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let paths = document["paths"]
            .as_object()
            .ok_or("the OpenAPI document has no paths")?;
        let mut operations = Vec::new();
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                let Some(responses) = op["responses"].as_object() else {
                    continue;
                };
                let mut errors = BTreeMap::new();
                for (key, response) in responses {
                    let Some(covers) = Covers::parse(key).filter(|c| c.is_error()) else {
                        continue;
                    };
                    let codes = response["x-error-codes"].as_array().map(|listed| {
                        listed
                            .iter()
                            .filter_map(|c| c.as_str())
                            .map(|c| names.get(c).cloned().unwrap_or_else(|| c.to_owned()))
                            .collect()
                    });
                    errors.insert(covers, codes);
                }
                operations.push(Operation {
                    method: method.to_ascii_uppercase(),
                    segments: path.split('/').map(str::to_owned).collect(),
                    errors,
                });
            }
        }
        if operations.is_empty() {
            return Err("the OpenAPI document documents no operation".into());
        }
        Ok(Self { operations })
    }

    /// Why an answer of `status` with `code` to `method path_and_query` is outside the contract,
    /// if it is. Answers below 400, answers without a stable code (a probe's bare 503), protocol
    /// codes, and requests that match no documented operation (the router's 404/405) are not
    /// judged.
    pub fn check(
        &self,
        method: &str,
        path_and_query: &str,
        status: u16,
        code: Option<&str>,
    ) -> Option<String> {
        let code = code?;
        if status < 400 || PROTOCOL_CODES.contains(&code) {
            return None;
        }
        let path: Vec<&str> = path_and_query
            .split('?')
            .next()
            .unwrap_or_default()
            .split('/')
            .collect();
        let op = self.operations.iter().find(|o| {
            o.method.eq_ignore_ascii_case(method)
                && o.segments.len() == path.len()
                && o.segments
                    .iter()
                    .zip(&path)
                    .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
        })?;
        let template = op.segments.join("/");
        // The most precise response that covers the status: its own, its class's, the default.
        match op.errors.iter().find(|(covers, _)| covers.covers(status)) {
            Some((_, None)) => None,
            Some((_, Some(codes))) if codes.contains(code) => None,
            Some(_) => Some(format!(
                "{method} {template} answered {status} {code}, which its contract does not list for {status}"
            )),
            None => Some(format!(
                "{method} {template} answered {status} {code}, a status its contract does not list"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn contract() -> Contract {
        Contract::from_openapi(&json!({ "paths": {
            "/v1/workspaces/{workspace_id}/activation": { "post": { "responses": {
                "200": { "description": "ok" },
                "409": { "description": "Conflict", "x-error-codes": ["NOT_CONNECTED"] }
            } } }
        } }))
        .unwrap()
    }

    #[test]
    fn a_listed_code_passes_and_an_unlisted_one_is_named() {
        let c = contract();
        let path = "/v1/workspaces/9b2e/activation";
        assert_eq!(c.check("POST", path, 409, Some("NOT_CONNECTED")), None);
        assert!(c
            .check("POST", path, 409, Some("OTHER"))
            .unwrap()
            .contains("409 OTHER"));
        assert!(c
            .check("POST", path, 500, Some("INTERNAL"))
            .unwrap()
            .contains("a status its contract does not list"));
    }

    #[test]
    fn success_protocol_codes_and_unknown_routes_are_not_judged() {
        let c = contract();
        assert_eq!(
            c.check("POST", "/v1/workspaces/x/activation", 200, None),
            None
        );
        assert_eq!(
            c.check(
                "POST",
                "/v1/workspaces/x/activation",
                504,
                Some("SYNC_POINT_TIMEOUT")
            ),
            None
        );
        assert_eq!(c.check("GET", "/nowhere", 404, Some("NOT_FOUND")), None);
        assert_eq!(
            c.check("GET", "/v1/workspaces/x/activation", 405, None),
            None
        );
        assert_eq!(
            c.check("POST", "/v1/workspaces/x/activation", 503, None),
            None
        );
    }

    #[test]
    fn the_reference_services_document_is_read_as_its_contract() {
        let c = Contract::from_openapi(&harbor_service::openapi::document()).unwrap();
        let ws = "/v1/workspaces/6f1c2a9e-0b1d-4c3e-9a57-2f0d1e8b4c11";
        let activation = format!("{ws}/activation");
        assert_eq!(
            c.check("POST", &activation, 409, Some("ACTIVATION_NOT_READY")),
            None
        );
        assert!(c
            .check("POST", &activation, 409, Some("INVALID_TRANSITION"))
            .is_some());
        let callback = "/v1/oauth/qbo/callback?state=x&code=y";
        assert_eq!(c.check("GET", callback, 403, Some("CONSENT_DENIED")), None);
        let documents = format!("{ws}/documents");
        assert!(c
            .check("GET", &documents, 429, Some("RATE_LIMITED"))
            .is_some());
        assert_eq!(
            c.check("DELETE", &activation, 405, Some("METHOD_NOT_ALLOWED")),
            None
        );
    }

    /// A plain OpenAPI document names statuses, ranges and a default, and no codes: its statuses
    /// are held, any code passes with them; codes a target lists are renamed as its answers are.
    #[test]
    fn ranges_defaults_and_documents_without_codes_are_read_as_written() {
        let path = "/v1/x";
        let plain = Contract::from_openapi(&json!({ "paths": { "/v1/x": { "post": { "responses": {
            "409": { "description": "Conflict" },
            "4XX": { "description": "Client error", "x-error-codes": ["BAD"] }
        } } } } }))
        .unwrap();
        assert_eq!(plain.check("POST", path, 409, Some("ANYTHING")), None);
        assert_eq!(plain.check("POST", path, 422, Some("BAD")), None);
        assert!(plain.check("POST", path, 422, Some("OTHER")).is_some());
        assert!(plain
            .check("POST", path, 503, Some("DOWN"))
            .unwrap()
            .contains("a status its contract does not list"));
        let with_default = Contract::from_openapi(&json!({ "paths": { "/v1/x": { "post": {
            "responses": { "default": { "description": "Error" } }
        } } } }))
        .unwrap();
        assert_eq!(with_default.check("POST", path, 503, Some("DOWN")), None);
        let names = BTreeMap::from([("NOT_READY".to_owned(), "ACTIVATION_NOT_READY".to_owned())]);
        let named = Contract::from_openapi_named(
            &json!({ "paths": { "/v1/x": { "post": { "responses": {
                "409": { "description": "Conflict", "x-error-codes": ["NOT_READY"] }
            } } } } }),
            &names,
        )
        .unwrap();
        assert_eq!(
            named.check("POST", path, 409, Some("ACTIVATION_NOT_READY")),
            None
        );
    }

    #[test]
    fn a_document_without_operations_is_refused() {
        assert!(Contract::from_openapi(&json!({ "paths": {} })).is_err());
        assert!(Contract::from_openapi(&json!({})).is_err());
    }
}
