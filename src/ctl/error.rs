//! What can go wrong in `leviathanctl`, worded so that an operator can act on it,
//! and the exit code each failure maps to: 1 the request was refused or the
//! operation failed (4xx, 5xx, a broken chain, a download that does not verify,
//! a declined confirmation, a local file problem), 2 usage, 3 the server cannot
//! be reached. Every message names what to change: the URL and the variable that
//! sets it, where the rejected token came from, what was not found.

use serde_json::Value;
use std::fmt;

/// Where a setting's value came from, so that a message can say what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    Default,
}

/// The base URL of the server and where it came from.
#[derive(Debug, Clone)]
pub struct UrlSetting {
    pub url: String,
    pub from: Source,
}

impl fmt::Display for UrlSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.from {
            Source::Flag => write!(f, "{} (from --url)", self.url),
            Source::Env => write!(f, "{} (from LEVIATHAN_API_URL)", self.url),
            Source::Default => write!(
                f,
                "{} (the default; LEVIATHAN_API_URL is not set)",
                self.url
            ),
        }
    }
}

/// A non-2xx answer, with the server's error body as it was sent.
#[derive(Debug)]
pub struct Refusal {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// `error.code`, when the body has the API's error shape.
    pub code: Option<String>,
    pub message: Option<String>,
    pub details: Option<Value>,
    /// The body as received (shown when it is not the API's error shape).
    pub body: String,
}

impl Refusal {
    /// A refusal from the response's status and body: the API's error shape
    /// (`{"error": {"code", "message", "details"}}`) is picked apart when the
    /// body has it.
    pub fn from_body(method: String, path: String, status: u16, body: String) -> Refusal {
        // `wire::ErrorBody`, without requiring `detail` (servers before it).
        #[derive(serde::Deserialize)]
        struct Shape {
            error: crate::wire::ErrorInfo,
        }
        let err = serde_json::from_str::<Shape>(&body).ok().map(|s| s.error);
        Refusal {
            method,
            path,
            status,
            code: err.as_ref().map(|e| e.code.clone()),
            message: err.as_ref().map(|e| e.message.clone()),
            details: err.and_then(|e| e.details),
            body,
        }
    }
}

impl Refusal {
    /// What a status says when the answer has no body to say more (every
    /// answer to a `HEAD`, or one from something other than Leviathan).
    fn without_body(&self) -> String {
        let read_route = matches!(self.method.as_str(), "GET" | "HEAD")
            && (self.path == "/v1" || self.path.starts_with("/v1/"));
        match self.status {
            401 => "no body: the server knows no such token; use the server's \
                    LEVIATHAN_CONTROL_PLANE_TOKEN or a token of its tokens file"
                .into(),
            403 if read_route => "no body: the token lacks the `read` role, which every GET and \
                                  HEAD under /v1 needs; use a token that has it (docs/SECURITY.md)"
                .into(),
            403 => "no body: the token lacks the role this route needs (`ingest`, `read` or \
                    `admin`, docs/SECURITY.md); use a token that has it"
                .into(),
            404 => "no body: nothing is there".into(),
            405 => "no body: this route does not take that method".into(),
            408 | 429 | 503 => "no body: the server is busy or not ready; retry shortly".into(),
            s if s >= 500 => "no body: the server's log says why".into(),
            _ => "empty body".into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.status >= 500 {
            "the server failed"
        } else if self.status == 404 {
            "not found"
        } else {
            "the server refused the request"
        };
        write!(f, "{what}: {} {}: {}", self.method, self.path, self.status)?;
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => {
                write!(f, " {code}: {message}")?;
                if let Some(d) = &self.details {
                    write!(f, "\n  details: {d}")?;
                }
                if code == "not_found" && message.starts_with("no such route") {
                    write!(
                        f,
                        "\n  this server does not have that route: it may be older than leviathanctl, \
                         or --url / LEVIATHAN_API_URL points at something else"
                    )?;
                }
                Ok(())
            }
            _ if self.body.trim().is_empty() => write!(f, " ({})", self.without_body()),
            _ => write!(f, "\n  body: {}", self.body.trim_end()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad arguments or settings (exit 2).
    #[error("{0}")]
    Usage(String),

    /// Connection refused, DNS failure, timeout, a connection cut mid-answer (exit 3).
    #[error(
        "cannot reach the Leviathan server at {url}: {cause}\n  \
         is it running there? Set LEVIATHAN_API_URL (or --url) to its address{hint}"
    )]
    Unreachable {
        url: UrlSetting,
        cause: String,
        /// Extra advice, e.g. how to resume `events follow`.
        hint: String,
    },

    /// 401 (exit 1).
    #[error(
        "the server rejected the token (401 {message})\n  \
         the token was read from {from}; it must be the server's LEVIATHAN_CONTROL_PLANE_TOKEN or \
         a token of its tokens file (LEVIATHAN_TOKENS_FILE)"
    )]
    Unauthorized { message: String, from: &'static str },

    /// Any other non-2xx answer (exit 1).
    #[error("{0}")]
    Refused(Box<Refusal>),

    /// A 2xx answer that is not what the API documents (exit 1).
    #[error("unexpected answer to {what}: {detail}")]
    BadResponse { what: String, detail: String },

    /// A local file could not be read or written (exit 1).
    #[error("{context}: {source}")]
    Local {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The operation ran and its outcome is a failure: a broken chain, a download
    /// that does not verify, a declined confirmation (exit 1).
    #[error("{0}")]
    Failed(String),

    /// Stdout was closed (e.g. piped into `head`): stop quietly (exit 0).
    #[error("stdout closed")]
    Closed,
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Closed => 0,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable { .. } => 3,
            _ => 1,
        }
    }

    /// A local I/O error, with what was being done.
    pub fn local(context: impl Into<String>, source: std::io::Error) -> CtlError {
        CtlError::Local {
            context: context.into(),
            source,
        }
    }

    /// Maps a failed write to stdout: a closed pipe ends quietly.
    pub fn stdout(e: std::io::Error) -> CtlError {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CtlError::Closed
        } else {
            CtlError::local("writing to stdout", e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, body: &str) -> Refusal {
        Refusal::from_body("GET".into(), "/v1/x".into(), status, body.into())
    }

    #[test]
    fn exit_codes() {
        assert_eq!(CtlError::Usage("x".into()).exit_code(), 2);
        let url = UrlSetting {
            url: "http://h".into(),
            from: Source::Default,
        };
        let e = CtlError::Unreachable {
            url,
            cause: "refused".into(),
            hint: String::new(),
        };
        assert_eq!(e.exit_code(), 3);
        let text = e.to_string();
        assert!(
            text.contains("http://h") && text.contains("LEVIATHAN_API_URL"),
            "{text}"
        );
        assert_eq!(
            CtlError::Refused(Box::new(refusal(500, "boom"))).exit_code(),
            1
        );
        assert_eq!(CtlError::Closed.exit_code(), 0);
    }

    #[test]
    fn answers_without_a_body_say_what_to_do() {
        let head = |status: u16| {
            Refusal::from_body(
                "HEAD".into(),
                "/v1/artifacts/ab".into(),
                status,
                String::new(),
            )
            .to_string()
        };
        let text = head(403);
        assert!(
            text.starts_with("the server refused the request: HEAD /v1/artifacts/ab: 403")
                && text.contains("lacks the `read` role"),
            "{text}"
        );
        let text =
            Refusal::from_body("POST".into(), "/v1/x".into(), 403, String::new()).to_string();
        assert!(text.contains("lacks the role this route needs"), "{text}");
        assert!(head(401).contains("no such token"), "{}", head(401));
        assert!(head(503).contains("retry"), "{}", head(503));
        assert!(head(418).ends_with("(empty body)"), "{}", head(418));
    }

    #[test]
    fn server_error_bodies_are_shown() {
        // A 5xx body that is not the API's shape (e.g. from a proxy) is shown as is.
        let text = refusal(502, "<html>bad gateway</html>").to_string();
        assert!(
            text.starts_with("the server failed: GET /v1/x: 502"),
            "{text}"
        );
        assert!(text.contains("<html>bad gateway</html>"), "{text}");
        let text = refusal(
            503,
            r#"{"error":{"code":"unavailable","message":"the writer stopped","details":{"k":1}}}"#,
        )
        .to_string();
        assert!(
            text.contains("503 unavailable: the writer stopped"),
            "{text}"
        );
        assert!(text.contains(r#"details: {"k":1}"#), "{text}");
    }
}
