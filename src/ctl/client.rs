//! The blocking HTTP client `leviathanctl` talks to the server with: it adds the
//! bearer token, builds URLs segment by segment (ids are percent-encoded), keeps
//! each answer's body exactly as sent (for `--json`) next to its parsed value,
//! and turns every failure into a [`CtlError`] with the right exit code: transport
//! failures (refused, DNS, timeout) are "cannot reach", 401 names where the
//! token came from, other non-2xx answers carry the server's error body.

use super::error::{CtlError, Refusal, Source, UrlSetting};
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::{Method, StatusCode, Url};
use std::error::Error as _;
use std::time::Duration;

/// A 2xx JSON answer: the bytes as sent (`--json` prints them unchanged);
/// [`Json::parse`] reads them as the route's wire model (`crate::wire`).
#[derive(Debug)]
pub struct Json {
    pub raw: String,
    /// What the request was, for errors (`GET /v1/...`).
    pub what: String,
}

impl Json {
    /// The body as the route's typed wire model.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, CtlError> {
        serde_json::from_str(&self.raw).map_err(|e| CtlError::BadResponse {
            what: self.what.clone(),
            detail: format!(
                "the body is not the expected shape ({e}): {}",
                truncate(&self.raw, 200)
            ),
        })
    }
}

pub struct Client {
    base: Url,
    url: UrlSetting,
    token: String,
    token_from: Source,
    http: Http,
    timeout: Duration,
}

impl Client {
    /// Checks the settings (an `http` URL, a non-empty token) before anything is sent.
    pub fn new(
        url: UrlSetting,
        token: Option<(String, Source)>,
        timeout: Duration,
    ) -> Result<Client, CtlError> {
        let base = Url::parse(url.url.trim()).map_err(|e| {
            CtlError::Usage(format!(
                "the server URL {url} is not a valid URL ({e}); set LEVIATHAN_API_URL or --url \
                 to e.g. http://127.0.0.1:8000"
            ))
        })?;
        match base.scheme() {
            "http" => {}
            "https" => {
                return Err(CtlError::Usage(format!(
                    "the server URL {url} uses https, which this build of leviathanctl does not \
                     support (the server itself speaks plain HTTP); use http://, or reach a \
                     TLS-terminating proxy through a local tunnel"
                )))
            }
            other => {
                return Err(CtlError::Usage(format!(
                    "the server URL {url} has scheme {other:?}; it must start with http://"
                )))
            }
        }
        let (token, token_from) = match token {
            Some((t, from)) if !t.trim().is_empty() => (t.trim().to_string(), from),
            Some((_, Source::Flag)) => {
                return Err(CtlError::Usage("--token is empty".into()));
            }
            _ => {
                return Err(CtlError::Usage(
                    "no token: set LEVIATHAN_CONTROL_PLANE_TOKEN to the server's token \
                     (or pass --token, which other users can see in the process list)"
                        .into(),
                ))
            }
        };
        let http = Http::builder()
            .connect_timeout(Duration::from_secs(10))
            // Per request instead: artifact transfers may take longer than `timeout`.
            .timeout(None)
            .user_agent(concat!("leviathanctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CtlError::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            base,
            url,
            token,
            token_from,
            http,
            timeout,
        })
    }

    /// The base URL, as the operator gave it.
    pub fn url(&self) -> &UrlSetting {
        &self.url
    }

    /// `base` + `/`-joined segments, each percent-encoded, + the query.
    pub fn endpoint(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut u = self.base.clone();
        {
            let mut path = u.path_segments_mut().expect("http URLs have a path");
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        u
    }

    /// A request with the token; `timed` requests get the `--timeout`.
    pub fn request(&self, method: Method, url: Url, timed: bool) -> RequestBuilder {
        let req = self.http.request(method, url).bearer_auth(&self.token);
        if timed {
            req.timeout(self.timeout)
        } else {
            req
        }
    }

    /// Sends and checks the status: 2xx (and 304) pass, everything else is an error.
    pub fn send(&self, req: RequestBuilder) -> Result<Response, CtlError> {
        let req = req.build().map_err(|e| CtlError::Usage(e.to_string()))?;
        let method = req.method().to_string();
        let path = display_path(req.url());
        let resp = self.http.execute(req).map_err(|e| self.transport(&e))?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        let body = resp.text().unwrap_or_default();
        let refusal = Refusal::from_body(method, path, status.as_u16(), body);
        if status == StatusCode::UNAUTHORIZED {
            return Err(CtlError::Unauthorized {
                message: match (refusal.code, refusal.message) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    // A HEAD answer has no body: say what a 401 means.
                    _ if refusal.body.trim().is_empty() => {
                        "no body: the token is unknown to the server or malformed".into()
                    }
                    _ => refusal.body,
                },
                from: match self.token_from {
                    Source::Flag => "--token",
                    _ => "LEVIATHAN_CONTROL_PLANE_TOKEN",
                },
            });
        }
        Err(CtlError::Refused(Box::new(refusal)))
    }

    /// A failure below HTTP: the server could not be reached or stopped answering.
    pub fn transport(&self, e: &reqwest::Error) -> CtlError {
        // The causes, innermost last, without reqwest's "error sending request for
        // url (...)" (the message names the URL) or hyper's "client error (...)".
        let mut causes: Vec<String> = Vec::new();
        let mut src: Option<&dyn std::error::Error> = e.source();
        while let Some(s) = src {
            let text = s.to_string();
            if !text.starts_with("client error (") && !causes.iter().any(|c| c.contains(&text)) {
                causes.push(text);
            }
            src = s.source();
        }
        let mut cause = if causes.is_empty() {
            e.to_string()
        } else {
            causes.join(": ")
        };
        if e.is_timeout() {
            cause = format!("no answer within the time limit ({cause}); --timeout sets it");
        }
        CtlError::Unreachable {
            url: self.url.clone(),
            cause,
            hint: String::new(),
        }
    }

    /// Sends and reads a JSON body.
    pub fn json(&self, req: RequestBuilder, what: &str) -> Result<Json, CtlError> {
        let resp = self.send(req)?;
        let raw = resp.text().map_err(|e| self.transport(&e))?;
        serde_json::from_str::<serde::de::IgnoredAny>(&raw).map_err(|e| CtlError::BadResponse {
            what: what.to_string(),
            detail: format!("the body is not JSON ({e}): {}", truncate(&raw, 200)),
        })?;
        Ok(Json {
            raw,
            what: what.to_string(),
        })
    }

    /// `GET` a JSON route.
    pub fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Json, CtlError> {
        let url = self.endpoint(segments, query);
        let what = format!("GET {}", display_path(&url));
        self.json(self.request(Method::GET, url, true), &what)
    }
}

/// The path and query of a URL, for messages.
pub fn display_path(u: &Url) -> String {
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}
