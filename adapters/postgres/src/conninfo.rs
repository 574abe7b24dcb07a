//! Connection strings as text, masked for messages: both forms libpq accepts, URLs
//! (`postgres://user:pass@host:port/db?k=v`) and keyword strings (`host=h password='p w'`).

/// Parameters whose values are secrets.
fn is_secret(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

/// The connection string with every password replaced by `***`, for messages and logs.
///
/// Masks the password of a URL's user information (`postgres://user:pass@host/db`, any
/// scheme), `password=` / `sslpassword=` query parameters, and keyword-form `password=…`
/// values, quoted or not. Where the text is malformed it masks more rather than less.
pub fn redact(conninfo: &str) -> String {
    match conninfo.find("://") {
        Some(scheme) => redact_url(conninfo, scheme + 3),
        None => redact_keywords(conninfo),
    }
}

fn redact_url(url: &str, start: usize) -> String {
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..start]);
    let mut rest = &url[start..];
    // The user information ends at an `@`; a password holding an unencoded `@` would
    // leave part of itself behind the first one, so the last one ends it here.
    if let Some(at) = rest.rfind('@') {
        let userinfo = &rest[..at];
        match userinfo.find(':') {
            Some(colon) => {
                out.push_str(&userinfo[..colon]);
                out.push_str(":***");
            }
            None => out.push_str(userinfo),
        }
        rest = &rest[at..];
    }
    match rest.find('?') {
        Some(q) => {
            out.push_str(&rest[..=q]);
            out.push_str(&redact_query(&rest[q + 1..]));
        }
        None => out.push_str(rest),
    }
    out
}

/// `k=v&k=v` with secret values masked. A secret runs to the next `&key=`, so that an
/// unencoded `&` inside it does not expose the part after it.
fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut params = query.split('&').peekable();
    let mut first = true;
    while let Some(param) = params.next() {
        if !first {
            out.push('&');
        }
        first = false;
        let key = param.split_once('=').map_or(param, |(k, _)| k);
        if param.contains('=') && is_secret(&percent_decode(key)) {
            out.push_str(key);
            out.push_str("=***");
            while params.peek().is_some_and(|next| !looks_like_parameter(next)) {
                params.next();
            }
        } else {
            out.push_str(param);
        }
    }
    out
}

/// `key=…` with a plausible parameter name.
fn looks_like_parameter(param: &str) -> bool {
    param.split_once('=').is_some_and(|(key, _)| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '%')
    })
}

fn redact_keywords(conninfo: &str) -> String {
    let mut out = String::with_capacity(conninfo.len());
    let mut s = conninfo;
    loop {
        let trimmed = s.trim_start();
        out.push_str(&s[..s.len() - trimmed.len()]);
        s = trimmed;
        if s.is_empty() {
            return out;
        }
        let key_len = s.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(s.len());
        let key = &s[..key_len];
        let after_key = &s[key_len..];
        let after_ws = after_key.trim_start();
        let Some(value_part) = after_ws.strip_prefix('=') else {
            // A stray word: copied as it is.
            out.push_str(key);
            s = after_key;
            continue;
        };
        let value_start = value_part.trim_start();
        let value_len = value_length(value_start);
        out.push_str(&s[..s.len() - value_start.len()]);
        if is_secret(key) {
            out.push_str("***");
            s = &value_start[value_len..];
            // Words after an unquoted secret that are not `key=value` are more of it.
            if !value_start.starts_with('\'') {
                while let Some(next) = stray_word(s) {
                    s = &s[next..];
                }
            }
        } else {
            out.push_str(&value_start[..value_len]);
            s = &value_start[value_len..];
        }
    }
}

/// Length of the value at the start of `s`: a quoted value through its closing quote
/// (or to the end when unterminated), else up to whitespace; a backslash escapes the next
/// character in both.
pub(crate) fn value_length(s: &str) -> usize {
    let quoted = s.starts_with('\'');
    let mut chars = s.char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return i + 1,
            c if !quoted && c.is_whitespace() => return i,
            _ => {}
        }
    }
    s.len()
}

/// When `s` starts with (whitespace and) a word that is not followed by `=`, the length
/// through that word.
fn stray_word(s: &str) -> Option<usize> {
    let word = s.trim_start();
    if word.is_empty() {
        return None;
    }
    let len = word.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(word.len());
    let assigns = word[len..].trim_start().starts_with('=');
    (!assigns && len > 0).then_some(s.len() - word.len() + len)
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "s3cr3t-pw-42";

    fn masked(conninfo: &str) -> String {
        let out = redact(conninfo);
        assert!(!out.contains(PW), "{conninfo} -> {out}");
        assert!(!out.contains("s3cr3t"), "{conninfo} -> {out}");
        out
    }

    #[test]
    fn a_url_password_is_masked_and_the_rest_kept() {
        assert_eq!(masked("postgres://u:s3cr3t-pw-42@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(
            masked("postgresql://u:s3cr3t-pw-42@h/db?sslmode=require"),
            "postgresql://u:***@h/db?sslmode=require"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn a_url_password_holding_url_syntax_is_masked_whole() {
        assert_eq!(masked("postgres://u:s3cr3t@pw-42@h/db"), "postgres://u:***@h/db");
        assert_eq!(masked("postgres://u:s3/cr3t?pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(masked("postgres://u:s3cr3t%40pw-42@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn a_password_query_parameter_is_masked_wherever_it_stands() {
        assert_eq!(masked("postgres://u@h/db?password=s3cr3t-pw-42"), "postgres://u@h/db?password=***");
        assert_eq!(
            masked("postgres://h/db?sslmode=require&password=s3cr3t-pw-42&application_name=x"),
            "postgres://h/db?sslmode=require&password=***&application_name=x"
        );
        assert_eq!(masked("postgres://h/db?PASSWORD=s3cr3t-pw-42"), "postgres://h/db?PASSWORD=***");
        assert_eq!(masked("postgres://h/db?pass%77ord=s3cr3t-pw-42"), "postgres://h/db?pass%77ord=***");
        assert_eq!(masked("postgres://h/db?sslpassword=s3cr3t-pw-42"), "postgres://h/db?sslpassword=***");
        assert_eq!(
            masked("postgres://h/db?password=s3cr3t&pw-42&sslmode=require"),
            "postgres://h/db?password=***&sslmode=require"
        );
    }

    #[test]
    fn a_keyword_form_password_is_masked_quoted_or_not() {
        assert_eq!(masked("host=h password=s3cr3t-pw-42 dbname=db"), "host=h password=*** dbname=db");
        assert_eq!(masked("host=h dbname=db password=s3cr3t-pw-42"), "host=h dbname=db password=***");
        assert_eq!(masked("host=h password='s3cr3t-pw-42' dbname=db"), "host=h password=*** dbname=db");
        assert_eq!(masked("host=h password = 's3cr3t pw-42 \\' s3cr3t' user=u"), "host=h password = *** user=u");
        assert_eq!(masked("host=h password=s3cr3t\\ pw-42 user=u"), "host=h password=*** user=u");
        assert_eq!(masked("password=s3cr3t-pw-42"), "password=***");
    }

    #[test]
    fn a_malformed_keyword_password_is_masked_to_what_follows_it() {
        // Unterminated quote: everything after is the secret.
        assert_eq!(masked("host=h password='s3cr3t-pw-42 dbname=db"), "host=h password=***");
        // An unquoted value with a space: the stray word is masked too.
        assert_eq!(masked("host=h password=s3cr3t pw-42 dbname=db"), "host=h password=*** dbname=db");
    }

    #[test]
    fn another_scheme_is_masked_as_a_url() {
        assert_eq!(masked("mysql://u:s3cr3t-pw-42@h/db"), "mysql://u:***@h/db");
        assert_eq!(masked("http://u:s3cr3t-pw-42@h/db?password=s3cr3t-pw-42"), "http://u:***@h/db?password=***");
    }
}
