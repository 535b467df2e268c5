//! The CLI as an API client: HTTPS with the operator's certificate (mutual TLS), trusting only
//! this appliance's root. Requests and answers are the API's own types ([`cps_api`]).

use std::path::Path;

use cps_appliance::config::Config;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub struct ApiClient {
    base: String,
    http: reqwest::blocking::Client,
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

impl ApiClient {
    /// Connect as operator `name` (files `<home>/operator/<name>-cert.pem` and `<name>-key.pem`).
    pub fn new(home: &Path, config: &Config, name: &str) -> Result<ApiClient, String> {
        let dir = home.join("operator");
        let mut identity = read(&dir.join(format!("{name}-cert.pem")))?;
        identity.extend(read(&dir.join(format!("{name}-key.pem")))?);
        let identity = reqwest::Identity::from_pem(&identity)
            .map_err(|e| format!("operator credential '{name}': {e}"))?;
        Self::build(home, config, Some(identity))
    }

    /// Connect without a client certificate (card login: the card is the credential).
    pub fn anonymous(home: &Path, config: &Config) -> Result<ApiClient, String> {
        Self::build(home, config, None)
    }

    fn build(
        home: &Path,
        config: &Config,
        identity: Option<reqwest::Identity>,
    ) -> Result<ApiClient, String> {
        let root = reqwest::Certificate::from_pem(&read(&home.join("ca/root.pem"))?)
            .map_err(|e| format!("root certificate: {e}"))?;
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .timeout(std::time::Duration::from_secs(30));
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| format!("HTTPS client: {e}"))?;
        Ok(ApiClient {
            base: format!("https://{}", config.listen.https),
            http,
        })
    }

    /// POST a raw body (an XML document, a CSV file).
    pub fn post_raw<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<T, String> {
        self.handle(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body(body)
                .send(),
        )
    }

    /// The answer as `T`, or the refusal as one line (`<status> <error> [<code>]`).
    fn handle<T: DeserializeOwned>(
        &self,
        resp: reqwest::Result<reqwest::blocking::Response>,
    ) -> Result<T, String> {
        let resp = resp.map_err(|e| {
            format!(
                "cannot reach the appliance at {} ({e}); is `cps-trust serve` running?",
                self.base
            )
        })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .map_err(|e| format!("reading the appliance's answer: {e}"))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| format!("unexpected answer from the appliance ({status}): {e}"));
        }
        let (error, code) = match serde_json::from_slice::<cps_api::LoginRefusalBody>(&body) {
            Ok(r) => (r.error, Some(r.code)),
            Err(_) => match serde_json::from_slice::<cps_api::ErrorBody>(&body) {
                Ok(r) => (r.error, None),
                Err(_) => ("request failed".to_owned(), None),
            },
        };
        let code = code.map(|c| format!(" [{c}]")).unwrap_or_default();
        Err(format!("{} {error}{code}", status.as_u16()))
    }

    /// POST JSON to a route whose refusals carry a verdict body (422 as well as 200): the status
    /// and the body as `T`; other refusals as [`Self::handle`] reports them.
    pub fn post_verdict<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(u16, T), String> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send();
        match resp {
            Ok(r) if r.status().as_u16() == 422 => {
                let body = r
                    .bytes()
                    .map_err(|e| format!("reading the appliance's answer: {e}"))?;
                serde_json::from_slice(&body)
                    .map(|v| (422, v))
                    .map_err(|e| format!("unexpected answer from the appliance (422): {e}"))
            }
            other => self.handle(other).map(|v| (200, v)),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        self.handle(self.http.get(format!("{}{path}", self.base)).send())
    }

    pub fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, String> {
        self.handle(
            self.http
                .post(format!("{}{path}", self.base))
                .json(body)
                .send(),
        )
    }

    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .map_err(|e| format!("cannot reach the appliance at {} ({e})", self.base))?;
        if !resp.status().is_success() {
            return Err(format!(
                "{} {}",
                resp.status().as_u16(),
                resp.text().unwrap_or_default().trim()
            ));
        }
        resp.bytes().map(|b| b.to_vec()).map_err(|e| e.to_string())
    }
}
