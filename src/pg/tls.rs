//! TLS to PostgreSQL, as libpq's `sslmode` says it (in `LEVIATHAN_POSTGRES_URL`,
//! either form: `sslmode=verify-full sslrootcert=/etc/leviathan/pg-ca.pem` or
//! `postgres://…?sslmode=verify-full&sslrootcert=…`):
//!
//! - `disable`, `allow`, `prefer` (and no `sslmode`): no TLS. (libpq's
//!   opportunistic `prefer` is not done: a connection either must be
//!   encrypted or is not.)
//! - `require`: encrypted, the server's certificate not checked (as libpq;
//!   with `sslrootcert`, checked as `verify-ca`).
//! - `verify-ca`: encrypted, the certificate chain checked against
//!   `sslrootcert` (the host name not).
//! - `verify-full`: as `verify-ca`, and the certificate names the host.
//!
//! rustls (through `tokio-postgres-rustls`, with the ring provider) does the
//! TLS; the client library parses the rest of the URL, so `sslmode` and
//! `sslrootcert` are taken out of it first (it knows neither
//! `verify-*` nor `sslrootcert`).

use super::PgError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The URL without its TLS settings, and those settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub rest: String,
    pub mode: SslMode,
    pub root_cert: Option<String>,
}

fn bad(message: String) -> PgError {
    PgError::Tls(message)
}

fn mode_of(value: &str) -> Result<SslMode, PgError> {
    Ok(match value {
        "disable" | "allow" | "prefer" => SslMode::Disable,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        other => {
            return Err(bad(format!(
                "sslmode={other:?} in LEVIATHAN_POSTGRES_URL: expected disable, require, \
                 verify-ca or verify-full"
            )))
        }
    })
}

/// Takes `sslmode` and `sslrootcert` out of `url`.
pub fn split(url: &str) -> Result<Split, PgError> {
    let trimmed = url.trim();
    let mut mode = None;
    let mut root_cert = None;
    let rest = if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        match trimmed.split_once('?') {
            None => trimmed.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    match pair.split_once('=') {
                        Some(("sslmode", v)) => mode = Some(v.to_string()),
                        Some(("sslrootcert", v)) => root_cert = Some(v.to_string()),
                        _ => kept.push(pair),
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value, text) in key_values(trimmed)? {
            match key.as_str() {
                "sslmode" => mode = Some(value),
                "sslrootcert" => root_cert = Some(value),
                _ => kept.push(text),
            }
        }
        kept.join(" ")
    };
    Ok(Split {
        rest,
        mode: mode.as_deref().map_or(Ok(SslMode::Disable), mode_of)?,
        root_cert,
    })
}

/// The `key=value` pairs of a libpq connection string: (key, unquoted
/// value, the pair's text as written).
fn key_values(s: &str) -> Result<Vec<(String, String, String)>, PgError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() || chars[i] != '=' {
            // Not ours to judge: the client library reports it.
            out.push((key.clone(), String::new(), key));
            continue;
        }
        i += 1;
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(bad(
                            "an unterminated quoted value in LEVIATHAN_POSTGRES_URL".into(),
                        ))
                    }
                    Some('\\') => {
                        if let Some(c) = chars.get(i + 1) {
                            value.push(*c);
                        }
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
        }
        out.push((key, value, chars[start..i].iter().collect()));
    }
    Ok(out)
}

/// The connector for `split`'s mode (with TLS off it is never used: the
/// client is told `sslmode=disable`).
pub fn connector(split: &Split) -> Result<MakeRustlsConnect, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS setup: {e}")))?;
    let mode = match (split.mode, &split.root_cert) {
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    let config = match mode {
        SslMode::Disable | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let Some(file) = &split.root_cert else {
                return Err(bad(format!(
                    "sslmode={} in LEVIATHAN_POSTGRES_URL needs sslrootcert=<file of the CA \
                     certificates (PEM) that signed the server's certificate>",
                    if mode == SslMode::VerifyCa {
                        "verify-ca"
                    } else {
                        "verify-full"
                    }
                )));
            };
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| bad(format!("sslrootcert {file}: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| bad(format!("sslrootcert {file}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("sslrootcert {file}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad(format!("sslrootcert {file} holds no certificate")));
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| bad(format!("sslrootcert {file}: {e}")))?;
            let verifier: Arc<dyn ServerCertVerifier> = if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `sslmode=require`: encryption without checking who the server is (the
/// handshake's signatures are still checked).
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain is checked, the host name is not.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_either_form() {
        let s = split("host=db user=lev sslmode=verify-full sslrootcert='/etc/a b.pem' dbname=x")
            .unwrap();
        assert_eq!(s.rest, "host=db user=lev dbname=x");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some("/etc/a b.pem"));
        let s = split("postgres://u@db:5432/x?sslmode=require&application_name=a").unwrap();
        assert_eq!(s.rest, "postgres://u@db:5432/x?application_name=a");
        assert_eq!(s.mode, SslMode::Require);
        let s = split("postgresql://db/x?sslmode=verify-ca&sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            (s.rest.as_str(), s.mode, s.root_cert.as_deref()),
            ("postgresql://db/x", SslMode::VerifyCa, Some("/ca.pem"))
        );
        assert_eq!(split("host=db").unwrap().mode, SslMode::Disable);
        assert_eq!(
            split("host=db sslmode=prefer").unwrap().mode,
            SslMode::Disable
        );
        assert!(split("host=db sslmode=sometimes").is_err());
        assert!(split("host='db").is_err());
    }

    #[test]
    fn verifying_modes_need_a_root_certificate() {
        let s = split("host=db sslmode=verify-full").unwrap();
        let err = connector(&s).err().unwrap().to_string();
        assert!(err.contains("needs sslrootcert"), "{err}");
        assert!(connector(&split("host=db sslmode=require").unwrap()).is_ok());
    }
}
