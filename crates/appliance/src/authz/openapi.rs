//! The OpenAPI document of `/api/v1`, generated: operations and schemas from the handlers'
//! `#[utoipa::path]` annotations and the [`cps_api`] types; who may call each operation from
//! the authorization table ([`crate::authz::ROUTES`]), never written a second time. A test walks
//! the table and the document both ways.

use utoipa::OpenApi;
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use crate::authz::{self, Forgery, Who};

/// The name of the mutual-TLS security scheme.
pub const MUTUAL_TLS: &str = "mutualTLS";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cps-trust API",
        description = "The appliance's HTTPS API (mutual TLS). Every operation lists who may call it: \
            operators by role (the roles are the security requirement's scopes), the card's \
            certificate (card login), or anyone. Every refusal has the `ErrorBody` shape, except \
            card login refusals (`LoginRefusalBody`) and refused assertions (`ValidationRefusal`).",
        license(name = "Apache-2.0"),
    ),
    paths(
        crate::api::whoami,
        crate::api::create_operator,
        crate::api::list_certificates,
        crate::api::issue,
        crate::api::get_certificate,
        crate::api::revoke,
        crate::api::crl,
        crate::api::list_nodes,
        crate::api::enroll_node,
        crate::api::get_node,
        crate::api::remove_node,
        crate::api::audit_events,
        crate::api::audit_checkpoints,
        crate::api_xua::challenge,
        crate::api_xua::login,
        crate::api_xua::login_tls,
        crate::api_xua::validate,
        crate::api_dsg::sign,
        crate::api_dsg::verify,
        crate::api_enrol::search,
        crate::api_enrol::create_professional,
        crate::api_enrol::import,
        crate::api_enrol::get_professional,
        crate::api_enrol::set_status,
        crate::api_enrol::readers,
        crate::api_enrol::job,
        crate::api_enrol::enrol,
        crate::api_enrol::get_card,
        crate::api_enrol::card_action,
        openapi_json,
    ),
    components(schemas(
        cps_api::ErrorBody,
        cps_api::LoginRefusalBody,
        cps_api::ValidationRefusal,
        cps_api::ImportReport,
        cps_api::Card,
    ))
)]
struct Generated;

/// `GET /api/v1/openapi.json` (served by the vendored Swagger UI's router).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "documentation",
    responses((status = 200, description = "this document", content_type = "application/json", body = Object)))]
#[allow(dead_code)]
fn openapi_json() {}

/// The OpenAPI document of this appliance.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = Generated::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        MUTUAL_TLS.into(),
        SecurityScheme::MutualTls {
            description: Some(
                "TLS client certificate issued by this appliance's CA: an operator certificate \
                 (its roles are bound to it) or, for card login, the card's authentication \
                 certificate. Checked against the live revocation state on every request."
                    .into(),
            ),
            extensions: None,
        },
    );
    let error = ResponseBuilder::new()
        .description(
            "refused: 400 bad input, 401 no or refused certificate, 403 role or request \
             forgery, 404 unknown, 409 conflict, 413 too large, 415 content type, 422 refused \
             by the service, 503 unavailable (nothing was changed)",
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))))
                .build(),
        )
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            ("GET", item.get.as_mut()),
            ("POST", item.post.as_mut()),
            ("PUT", item.put.as_mut()),
            ("DELETE", item.delete.as_mut()),
            ("PATCH", item.patch.as_mut()),
        ] {
            let Some(op) = op else { continue };
            let method = axum::http::Method::from_bytes(method.as_bytes())
                .unwrap_or(axum::http::Method::GET);
            let Some(route) = authz::rule(&method, path) else {
                // Not a route: the test that walks the table fails on it.
                continue;
            };
            op.summary = Some(route.what.to_owned());
            let (who, security) = match route.who {
                Who::Anyone => ("anyone (no client certificate needed)".to_owned(), vec![]),
                Who::CardCertificate => (
                    "a client certificate: the card's authentication certificate".to_owned(),
                    vec![SecurityRequirement::new::<_, [&str; 0], &str>(
                        MUTUAL_TLS,
                        [],
                    )],
                ),
                Who::Operator(roles) => {
                    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                    (
                        format!("an operator with the role {}", names.join(" or ")),
                        vec![SecurityRequirement::new(MUTUAL_TLS, names)],
                    )
                }
            };
            let media = match route.forgery {
                Forgery::Write(types) => format!(" Content-Type: {}.", types.join(" or ")),
                Forgery::Read | Forgery::Form => String::new(),
            };
            let head = format!("Who may call it: {who}.{media}");
            op.description = Some(match op.description.take() {
                Some(d) if !d.is_empty() => format!("{head}\n\n{d}"),
                _ => head,
            });
            op.security = Some(security);
            let ext = op.extensions.get_or_insert_with(Default::default);
            ext.insert(
                "x-roles".into(),
                match route.who {
                    Who::Operator(roles) => {
                        serde_json::json!(roles.iter().map(|r| r.as_str()).collect::<Vec<_>>())
                    }
                    Who::CardCertificate => serde_json::json!(["card-certificate"]),
                    Who::Anyone => serde_json::json!([]),
                },
            );
            op.responses
                .responses
                .entry("default".into())
                .or_insert_with(|| RefOr::T(error.clone()));
        }
    }
    doc
}

/// `/api/docs/` (Swagger UI) and `/api/v1/openapi.json`, the document generated from the
/// handlers, the API's types and the authorization table ([`openapi`]).
pub(super) fn swagger_ui() -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/api/docs")
        .url("/api/v1/openapi.json", openapi())
        // No call to the online validator: the page loads nothing from elsewhere.
        .config(utoipa_swagger_ui::Config::default().validator_url("none"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{ROUTES, Surface};
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(openapi()).unwrap()
    }

    /// `$ref` → the schema it names, which must exist.
    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/components/schemas/").expect(r);
                let s = &doc["components"]["schemas"][name];
                assert!(s.is_object(), "{r} is not in the document");
                s
            }
            None => schema,
        }
    }

    const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

    /// Every API route of the authorization table is an operation of the document, every
    /// operation is a route, and every operation has a response with a schema (and the error
    /// body); request bodies are described for writes.
    #[test]
    fn the_document_and_the_routing_table_agree() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in paths {
            for m in METHODS {
                if let Some(op) = item.get(m) {
                    documented.insert((m.to_uppercase(), path.clone()));
                    let method =
                        axum::http::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
                    let route = authz::rule(&method, path)
                        .unwrap_or_else(|| panic!("{m} {path} is documented but not a route"));
                    assert_eq!(route.surface, Surface::Api, "{path}");
                    let responses = op["responses"].as_object().unwrap();
                    let ok: Vec<_> = responses
                        .iter()
                        .filter(|(code, _)| code.starts_with('2'))
                        .collect();
                    assert!(!ok.is_empty(), "{m} {path}: no success response");
                    for (code, r) in ok
                        .iter()
                        .copied()
                        .chain(responses.iter().filter(|(c, _)| !c.starts_with('2')))
                    {
                        let content = r["content"].as_object().unwrap_or_else(|| {
                            panic!("{m} {path} {code}: a response without content")
                        });
                        for (media, c) in content {
                            let schema = resolve(&doc, &c["schema"]);
                            assert!(
                                schema.is_object() && !schema.as_object().unwrap().is_empty(),
                                "{m} {path} {code} {media}: no schema"
                            );
                        }
                    }
                    assert_eq!(
                        responses["default"]["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{m} {path}: no error body"
                    );
                    if let Forgery::Write(types) = route.forgery {
                        let content =
                            op["requestBody"]["content"].as_object().unwrap_or_else(|| {
                                panic!("{m} {path}: a write without a request body")
                            });
                        for media in content.keys() {
                            assert!(
                                types.contains(&media.as_str()),
                                "{m} {path}: documented {media}, the route takes {types:?}"
                            );
                        }
                    }
                }
            }
        }
        let routes: std::collections::BTreeSet<_> = ROUTES
            .iter()
            .filter(|r| r.surface == Surface::Api && !r.path.starts_with("/api/docs"))
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .collect();
        let missing: Vec<_> = routes.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes missing from the document: {missing:?}"
        );
        let extra: Vec<_> = documented.difference(&routes).collect();
        assert!(
            extra.is_empty(),
            "documented operations that are not routes: {extra:?}"
        );
    }

    /// Who may call an operation is the table's answer: the roles are the mutual-TLS
    /// requirement's scopes and `x-roles`.
    #[test]
    fn roles_come_from_the_authorization_table() {
        let doc = document();
        assert_eq!(
            doc["components"]["securitySchemes"][MUTUAL_TLS]["type"],
            "mutualTLS"
        );
        for r in ROUTES
            .iter()
            .filter(|r| r.surface == Surface::Api && !r.path.starts_with("/api/docs"))
        {
            let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
            let security = op["security"].as_array().unwrap();
            match r.who {
                Who::Anyone => assert!(security.is_empty(), "{}", r.path),
                Who::CardCertificate => {
                    assert_eq!(security[0][MUTUAL_TLS], serde_json::json!([]), "{}", r.path)
                }
                Who::Operator(roles) => {
                    let names: Vec<&str> = roles.iter().map(|x| x.as_str()).collect();
                    assert_eq!(
                        security[0][MUTUAL_TLS],
                        serde_json::json!(names),
                        "{}",
                        r.path
                    );
                    assert_eq!(op["x-roles"], serde_json::json!(names), "{}", r.path);
                }
            }
            assert_eq!(op["summary"], r.what, "{}", r.path);
        }
    }

    /// The document names this API's operations the way Swagger UI lists them (the console
    /// test looks for them on the page).
    #[test]
    fn key_operations_are_described_with_their_types() {
        let doc = document();
        let body = |p: &str, m: &str, code: &str| {
            doc["paths"][p][m]["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        assert!(body("/api/v1/login", "post", "200").ends_with("/LoginResult"));
        assert!(body("/api/v1/login", "post", "401").ends_with("/LoginRefusalBody"));
        assert!(body("/api/v1/xua/validate", "post", "200").ends_with("/ValidationView"));
        assert!(body("/api/v1/xua/validate", "post", "422").ends_with("/ValidationRefusal"));
        assert!(body("/api/v1/cards/{serial}", "get", "200").ends_with("/Card"));
        assert!(
            doc["paths"]["/api/v1/xua/validate"]["post"]["requestBody"]["content"]
                .get("application/xml")
                .is_some()
        );
        let card = &doc["components"]["schemas"]["Card"];
        assert!(card["properties"]["status"].is_object());
    }
}
