//! The URL's TLS settings: libpq's six `sslmode`s and `sslrootcert`, taken out of the
//! connection string before the driver (which parses only disable, prefer and require)
//! sees it.

use crate::conninfo::{percent_decode, value_length};

/// The URL schemes the driver accepts.
const SCHEMES: [&str; 2] = ["postgres", "postgresql"];

/// What `sslmode` asks for, libpq's six values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// Never TLS.
    Disable,
    /// libpq tries without TLS first; here it behaves as `prefer`.
    Allow,
    /// TLS when the server offers it (the default); no certificate check.
    Prefer,
    /// TLS or no connection; no certificate check (unless `sslrootcert` is given).
    Require,
    /// TLS, the certificate chain checked against trusted roots.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The value the driver understands: it knows only disable, prefer and require.
    fn for_driver(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow | SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verification {
    /// Not at all (`prefer`, `require`): encryption without authentication of the server.
    None,
    /// The chain must lead to a trusted root; with `host_name`, the certificate must also
    /// name the host.
    Chain { roots: Roots, host_name: bool },
}

/// The roots a certificate chain must lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    /// The Mozilla root program's CAs, built in (no `sslrootcert`, or `sslrootcert=system`).
    Public,
    /// The PEM certificates in this file (`sslrootcert=/path`).
    File(String),
}

/// The TLS settings of a connection string, and the string the driver is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) mode: SslMode,
    pub(crate) verification: Verification,
    /// The connection string without `sslrootcert`, `sslmode` in a form the driver parses.
    pub(crate) driver_conninfo: String,
}

/// Takes the TLS settings out of a connection string. `Err` says what is wrong, without
/// repeating the string (the caller names it, redacted).
pub(crate) fn tls_settings(conninfo: &str) -> Result<TlsSettings, String> {
    let (pairs, rebuild): (Vec<(String, String)>, Rebuild<'_>) = match conninfo.find("://") {
        Some(end) => {
            let scheme = &conninfo[..end];
            if !SCHEMES.contains(&scheme) {
                return Err(format!(
                    "the scheme {scheme}:// is not PostgreSQL's; use postgres:// or postgresql:// \
                     (or the keyword form host=… dbname=…)"
                ));
            }
            // The driver takes the user information up to the first `@`, so the query
            // starts at the first `?` after it.
            let after_userinfo = conninfo.find('@').map_or(end + 3, |at| at + 1);
            match conninfo[after_userinfo..].find('?') {
                Some(q) => {
                    let q = after_userinfo + q;
                    let pairs = conninfo[q + 1..]
                        .split('&')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').unwrap_or((p, ""));
                            (percent_decode(k), percent_decode(v))
                        })
                        .collect();
                    (pairs, Rebuild::Query { base: &conninfo[..q], raw: &conninfo[q + 1..] })
                }
                None => (Vec::new(), Rebuild::Unchanged),
            }
        }
        None => match keyword_pairs(conninfo) {
            Some(pairs) => (pairs, Rebuild::Keywords),
            // Malformed: the driver reports what is wrong with it.
            None => (Vec::new(), Rebuild::Unchanged),
        },
    };
    let mut mode = None;
    let mut root_cert = None;
    for (key, value) in &pairs {
        match key.as_str() {
            "sslmode" => mode = Some(SslMode::parse(value)?),
            "sslrootcert" => root_cert = Some(value.clone()),
            "sslcert" | "sslkey" => {
                return Err(format!("{key}: client certificates are not supported; authenticate with a password"))
            }
            _ => {}
        }
    }
    let mode = mode.unwrap_or(SslMode::Prefer);
    let roots = match root_cert.as_deref() {
        None | Some("system") => Roots::Public,
        Some("") => return Err("sslrootcert is empty; give the path of a PEM file of CA certificates".into()),
        Some(path) => Roots::File(path.to_owned()),
    };
    let verification = match mode {
        SslMode::VerifyFull => Verification::Chain { roots, host_name: true },
        SslMode::VerifyCa => Verification::Chain { roots, host_name: false },
        // As libpq: `require` with a root certificate file given checks the chain.
        SslMode::Require if matches!(roots, Roots::File(_)) => Verification::Chain { roots, host_name: false },
        _ => Verification::None,
    };
    let driver_conninfo = match rebuild {
        Rebuild::Unchanged => conninfo.to_owned(),
        Rebuild::Query { base, raw } => {
            let mut kept: Vec<&str> = raw
                .split('&')
                .filter(|p| {
                    let key = percent_decode(p.split_once('=').map_or(p, |(k, _)| k));
                    !p.is_empty() && key != "sslmode" && key != "sslrootcert"
                })
                .collect();
            let driver_mode = format!("sslmode={}", mode.for_driver());
            kept.push(&driver_mode);
            format!("{base}?{}", kept.join("&"))
        }
        Rebuild::Keywords => {
            let mut parts: Vec<String> = pairs
                .iter()
                .filter(|(k, _)| k != "sslmode" && k != "sslrootcert")
                .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
                .collect();
            parts.push(format!("sslmode={}", mode.for_driver()));
            parts.join(" ")
        }
    };
    Ok(TlsSettings { mode, verification, driver_conninfo })
}

enum Rebuild<'a> {
    Unchanged,
    Query { base: &'a str, raw: &'a str },
    Keywords,
}

/// The `key=value` pairs of a keyword-form string, values unquoted and unescaped; `None`
/// when it is malformed.
fn keyword_pairs(conninfo: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut s = conninfo.trim_start();
    while !s.is_empty() {
        let key_len = s.find(|c: char| c.is_whitespace() || c == '=')?;
        let key = &s[..key_len];
        let value_start = s[key_len..].trim_start().strip_prefix('=')?.trim_start();
        let len = value_length(value_start);
        let raw = &value_start[..len];
        let quoted = raw.starts_with('\'');
        if quoted && (len < 2 || !raw.ends_with('\'')) {
            return None;
        }
        let inner = if quoted { &raw[1..len - 1] } else { raw };
        let mut value = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            value.push(if c == '\\' { chars.next()? } else { c });
        }
        if key.is_empty() || (!quoted && value.is_empty()) {
            return None;
        }
        pairs.push((key.to_owned(), value));
        s = value_start[len..].trim_start();
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_are_taken_out_of_a_url_for_the_driver() {
        let s = tls_settings("postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&application_name=x")
            .unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.verification, Verification::Chain { roots: Roots::File("/tmp/ca.pem".into()), host_name: true });
        assert_eq!(s.driver_conninfo, "postgres://u:p@h/db?application_name=x&sslmode=require");
        let s = tls_settings("postgresql://h/db?sslmode=verify-ca").unwrap();
        assert_eq!(s.verification, Verification::Chain { roots: Roots::Public, host_name: false });
        let s = tls_settings("postgres://h/db?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(s.verification, Verification::Chain { roots: Roots::Public, host_name: true });
    }

    #[test]
    fn verify_modes_are_taken_out_of_a_keyword_string_for_the_driver() {
        let s =
            tls_settings("host=h dbname=db sslmode=verify-ca sslrootcert='/tmp/my ca.pem' password='a\\'b'").unwrap();
        assert_eq!(
            s.verification,
            Verification::Chain { roots: Roots::File("/tmp/my ca.pem".into()), host_name: false }
        );
        assert_eq!(s.driver_conninfo, "host='h' dbname='db' password='a\\'b' sslmode=require");
        let parsed: Result<tokio_postgres::Config, _> = s.driver_conninfo.parse();
        assert_eq!(parsed.expect("the driver parses it").get_password(), Some(&b"a'b"[..]));
    }

    #[test]
    fn the_driver_modes_pass_through_and_prefer_is_the_default() {
        for (url, mode, driver) in [
            ("postgres://h/db", SslMode::Prefer, "postgres://h/db"),
            ("postgres://h/db?sslmode=disable", SslMode::Disable, "postgres://h/db?sslmode=disable"),
            ("postgres://h/db?sslmode=allow", SslMode::Allow, "postgres://h/db?sslmode=prefer"),
            ("postgres://h/db?sslmode=require", SslMode::Require, "postgres://h/db?sslmode=require"),
        ] {
            let s = tls_settings(url).unwrap();
            assert_eq!(
                (s.mode, s.verification, s.driver_conninfo.as_str()),
                (mode, Verification::None, driver),
                "{url}"
            );
        }
        let s = tls_settings("postgres://h/db?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(s.verification, Verification::Chain { roots: Roots::File("/ca.pem".into()), host_name: false });
    }

    #[test]
    fn a_bad_scheme_mode_or_client_certificate_is_refused_by_name() {
        let e = tls_settings("mysql://u:p@h/db").unwrap_err();
        assert!(e.contains("mysql://") && e.contains("postgres://"), "{e}");
        assert!(tls_settings("http://h/db").unwrap_err().contains("http://"));
        let e = tls_settings("postgres://h/db?sslmode=verify").unwrap_err();
        assert!(e.contains("\"verify\"") && e.contains("verify-full"), "{e}");
        assert!(tls_settings("host=h sslcert=/c.pem").unwrap_err().contains("client certificates"));
    }
}
