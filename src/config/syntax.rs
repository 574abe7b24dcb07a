//! The syntax of single values in `projections.yaml`: projection names, `on_failure`,
//! listen addresses, webhook URLs and environment variable names. Validation asks these
//! and words the error with the value's location.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::OnFailure;

pub(super) fn is_projection_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The `on_failure:` choice spelled `name` (`park`, `stop`).
pub(super) fn on_failure_from_name(name: &str) -> Option<OnFailure> {
    match name {
        "park" => Some(OnFailure::Park),
        "stop" => Some(OnFailure::Stop),
        _ => None,
    }
}

/// `off` (`Some(None)`), `IP:port`, `[IPv6]:port` or `localhost:port`; `None` otherwise.
pub(super) fn parse_listen(text: &str) -> Option<Option<SocketAddr>> {
    if text == "off" {
        return Some(None);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(Some(addr));
    }
    let port = text.strip_prefix("localhost:")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    Some(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
}

/// An absolute `http://` or `https://` URL with a host (a DNS name, an IPv4 address or
/// a bracketed IPv6 address), an optional port, and no whitespace.
pub(super) fn is_http_url(url: &str) -> bool {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let lower = url.to_ascii_lowercase();
    let Some(scheme_len) = ["http://", "https://"].into_iter().find(|scheme| lower.starts_with(scheme)).map(str::len)
    else {
        return false;
    };
    let rest = &url[scheme_len..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials (`user:password@`) may precede the host.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host_ok, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        (host.parse::<Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        (ok, port)
    };
    let port_ok = port.is_none_or(|port| {
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    host_ok && port_ok
}

pub(super) fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
