//! Owns workload identities (D7): SPIFFE ID syntax, the trust bundles a TLS
//! listener verifies client certificates with, what it does with
//! `x-forwarded-client-cert`, and the authorization rules of virtual hosts
//! and routes.

use std::sync::Arc;

/// A SPIFFE ID split into its trust domain and path, checked against the
/// SPIFFE specification: `spiffe://<trust-domain>[/<segment>...]`, the
/// domain in lower-case letters, digits, `.`, `-` and `_`, each path segment
/// non-empty, not `.` or `..`, of letters, digits, `.`, `-` and `_`.
pub fn parse_spiffe_id(id: &str) -> Result<(&str, &str), String> {
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or_else(|| format!("`{id}` is not a SPIFFE ID (spiffe://<trust-domain>/<path>)"))?;
    let (domain, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    check_trust_domain(domain).map_err(|e| format!("`{id}`: {e}"))?;
    if path == "/" {
        return Err(format!("`{id}`: the path must not end with `/`"));
    }
    for seg in path.split('/').skip(1) {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !ok {
            return Err(format!("`{id}`: bad path segment `{seg}`"));
        }
    }
    Ok((domain, path))
}

/// Checks a SPIFFE trust domain name.
pub fn check_trust_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("the trust domain is empty".into());
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(format!(
            "trust domain `{domain}` may hold only lower-case letters, digits, `.`, `-` and `_`"
        ));
    }
    Ok(())
}

/// Client certificate verification on a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// Trust domain → PEM file of its CA certificates.
    pub trust_bundles: Vec<(Arc<str>, Arc<str>)>,
    /// Connections without a client certificate are refused.
    pub required: bool,
}

/// What a listener does with `x-forwarded-client-cert` (Envoy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardClientCert {
    /// Removed.
    #[default]
    Sanitize,
    /// Removed, then set from the verified client certificate.
    SanitizeSet,
    /// Forwarded as the client sent it on mTLS connections; removed otherwise.
    ForwardOnly,
}

/// One identity a virtual host or route allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Exactly this SPIFFE ID.
    Id(Arc<str>),
    /// Any ID of this trust domain.
    Domain(Arc<str>),
    /// IDs starting with this.
    Prefix(Arc<str>),
}

/// Who may use a virtual host or route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Allowed identities; a request needs a verified ID matching one.
    pub allow: Vec<Principal>,
}

impl Authorization {
    /// Whether a client with the verified SPIFFE ID `id` (`None`: no
    /// verified client certificate) is allowed.
    pub fn allows(&self, id: Option<&str>) -> bool {
        let Some(id) = id else { return false };
        self.allow.iter().any(|p| match p {
            Principal::Id(x) => x.as_ref() == id,
            Principal::Prefix(x) => id.starts_with(x.as_ref()),
            Principal::Domain(d) => parse_spiffe_id(id).is_ok_and(|(td, _)| td == d.as_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_follow_the_specification() {
        assert_eq!(
            parse_spiffe_id("spiffe://aws.corridor/ns/inference/sa/gpu").unwrap(),
            ("aws.corridor", "/ns/inference/sa/gpu")
        );
        assert_eq!(parse_spiffe_id("spiffe://td").unwrap(), ("td", ""));
        for bad in [
            "https://aws.corridor/x",
            "spiffe://",
            "spiffe:///x",
            "spiffe://AWS.corridor/x",
            "spiffe://aws.corridor/",
            "spiffe://aws.corridor//x",
            "spiffe://aws.corridor/./x",
            "spiffe://aws.corridor/x/../y",
            "spiffe://aws.corridor/x y",
            "spiffe://user@aws.corridor/x",
            "spiffe://aws.corridor:443/x",
        ] {
            assert!(parse_spiffe_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn authorization_matches_ids_domains_and_prefixes() {
        let a = Authorization {
            allow: vec![
                Principal::Id("spiffe://aws.corridor/ns/a".into()),
                Principal::Domain("gcp.corridor".into()),
                Principal::Prefix("spiffe://oci.corridor/ns/inference/".into()),
            ],
        };
        assert!(a.allows(Some("spiffe://aws.corridor/ns/a")));
        assert!(!a.allows(Some("spiffe://aws.corridor/ns/ab")));
        assert!(a.allows(Some("spiffe://gcp.corridor/anything")));
        assert!(!a.allows(Some("spiffe://gcp.corridor.evil/x")));
        assert!(a.allows(Some("spiffe://oci.corridor/ns/inference/sa/x")));
        assert!(!a.allows(Some("spiffe://oci.corridor/ns/other")));
        assert!(!a.allows(None));
    }
}
