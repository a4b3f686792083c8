//! Owns compiled data-residency settings (D5): the known jurisdictions, the
//! geo tables that place clients and endpoints in them, trusted headers, and
//! residency policies with the one function that turns a request's data
//! classes and subject jurisdictions into the set of endpoint jurisdictions
//! allowed to serve it. Jurisdictions are bits of a `u64` (at most 64).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderName;

use crate::request::Cidr;

/// A set of jurisdictions (bit `i` = jurisdiction `i` of [`Geo::jurisdictions`]).
pub type JurisdictionSet = u64;

/// A header honoured only from trusted peers (and removed from the others').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedHeader {
    /// The header.
    pub name: HeaderName,
    /// Peers allowed to set it.
    pub trusted_from: Vec<Cidr>,
}

impl TrustedHeader {
    /// Whether `peer` may set the header.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted_from.iter().any(|c| c.contains(ip)))
    }
}

/// Jurisdictions and the tables that place clients and endpoints in them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Geo {
    /// Known jurisdictions; the index is the bit.
    pub jurisdictions: Vec<Arc<str>>,
    /// Country code (upper case) → jurisdiction index.
    pub countries: HashMap<[u8; 2], u8>,
    /// Region or `cloud/region` → jurisdiction index.
    pub regions: HashMap<Arc<str>, u8>,
    /// The client's country from a trusted header.
    pub country_header: Option<TrustedHeader>,
    /// The client's country from a MaxMind database at this path.
    pub mmdb_file: Option<Arc<str>>,
    /// Client jurisdiction index → regions (`cloud/region` or `region`),
    /// nearest first, for routes that prefer the nearest endpoints.
    pub preferred_regions: HashMap<u8, Vec<Arc<str>>>,
    /// Residency attestation: SPIFFE ID prefixes (longest first, each
    /// ending with `/`) and trust domains (as `spiffe://<domain>/`, after the
    /// prefixes) → jurisdiction index.
    pub identities: Vec<(Arc<str>, u8)>,
    /// Jurisdiction names are not checked against these tables: set only
    /// where a control plane validates policies for proxies whose geo tables
    /// it does not know (each proxy checks them again).
    pub unchecked: bool,
}

impl Geo {
    /// The index of jurisdiction `name`.
    pub fn jurisdiction(&self, name: &str) -> Option<u8> {
        self.jurisdictions
            .iter()
            .position(|j| j.as_ref() == name)
            .map(|i| i as u8)
    }

    /// The jurisdiction an upstream's SPIFFE ID belongs to, by the
    /// attestation table (`None` when no row matches).
    pub fn of_identity(&self, spiffe_id: &str) -> Option<u8> {
        self.identities
            .iter()
            .find(|(prefix, _)| spiffe_id.starts_with(prefix.as_ref()))
            .map(|(_, j)| *j)
    }

    /// The jurisdiction of a country code (any case).
    pub fn country(&self, code: &[u8]) -> Option<u8> {
        let [a, b] = code else { return None };
        self.countries
            .get(&[a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            .copied()
    }

    /// An endpoint's jurisdiction: its `jurisdiction` label, else its
    /// `cloud/region`, else its region in the regions table.
    pub fn of_endpoint(&self, e: &crate::Endpoint) -> Option<u8> {
        if let Some(j) = e.labels.get("jurisdiction") {
            return self.jurisdiction(j);
        }
        let l = &e.locality;
        let both = format!("{}/{}", l.cloud, l.region);
        self.regions
            .get(both.as_str())
            .or_else(|| self.regions.get(l.region.as_ref()))
            .copied()
    }

    /// Names of the jurisdictions in `set`, for messages.
    pub fn names(&self, set: JurisdictionSet) -> Vec<&str> {
        (0..self.jurisdictions.len())
            .filter(|i| set & (1 << i) != 0)
            .map(|i| self.jurisdictions[i].as_ref())
            .collect()
    }
}

/// One compiled residency rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidencyRule {
    /// Classes covered (bit = index into [`ResidencyPolicy::classes`]).
    pub classes: u64,
    /// Subject jurisdictions covered; `None`: any.
    pub subjects: Option<JurisdictionSet>,
    /// Endpoint jurisdictions allowed.
    pub allowed: JurisdictionSet,
}

/// A compiled residency policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidencyPolicy {
    /// Name.
    pub name: Arc<str>,
    /// The data-class header.
    pub class_header: Option<TrustedHeader>,
    /// The subject-jurisdiction header.
    pub subject_header: Option<TrustedHeader>,
    /// Take the subject from the client's country.
    pub subject_from_geo: bool,
    /// Data classes the rules name; the index is the bit.
    pub classes: Vec<Arc<str>>,
    /// Rules.
    pub rules: Vec<ResidencyRule>,
    /// Unclassified requests get the strictest reading.
    pub restrict_unclassified: bool,
    /// Log and count, but do not enforce.
    pub dry_run: bool,
    /// Tenant header and table.
    pub tenants: Option<Tenants>,
    /// Share of allowed classified requests that get an audit line (0 to 1).
    pub audit_sample_rate: f64,
}

/// A policy's tenants, named by a trusted header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenants {
    /// The tenant header.
    pub header: TrustedHeader,
    /// Tenant → (class index, home jurisdiction).
    pub table: HashMap<Arc<str>, (Option<usize>, Option<u8>)>,
}

impl ResidencyPolicy {
    /// The index of class `name`.
    pub fn class(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c.as_ref() == name)
    }

    /// Endpoint jurisdictions allowed for data of `class` about a subject in
    /// `subject` (`None`: unknown): the union over the rules that cover the
    /// pair; none covers it: nothing.
    pub fn allowed_for(&self, class: usize, subject: Option<u8>) -> JurisdictionSet {
        self.rules
            .iter()
            .filter(|r| r.classes & (1 << class) != 0)
            .filter(|r| match (r.subjects, subject) {
                (None, _) => true,
                (Some(s), Some(j)) => s & (1 << j) != 0,
                (Some(_), None) => false,
            })
            .fold(0, |acc, r| acc | r.allowed)
    }

    /// Jurisdictions every class allows for `subject` (the strictest class).
    pub fn strictest(&self, subject: Option<u8>) -> JurisdictionSet {
        (0..self.classes.len()).fold(u64::MAX, |acc, c| acc & self.allowed_for(c, subject))
    }

    /// Endpoint jurisdictions allowed for a request with `classes` (`None`
    /// for an unknown class name: the strictest) and `subjects`: every pair
    /// must be allowed, so the narrowest reading wins. `None` means no
    /// restriction (unclassified, and the policy allows that).
    pub fn decide(&self, classes: &[Option<usize>], subjects: &[u8]) -> Option<JurisdictionSet> {
        let unclassified = classes.is_empty();
        if unclassified && !self.restrict_unclassified {
            return None;
        }
        let mut allowed = u64::MAX;
        let subjects: smallvec::SmallVec<[Option<u8>; 2]> = if subjects.is_empty() {
            smallvec::smallvec![None]
        } else {
            subjects.iter().map(|s| Some(*s)).collect()
        };
        for s in subjects {
            if unclassified {
                allowed &= self.strictest(s);
            }
            for c in classes {
                allowed &= match c {
                    Some(c) => self.allowed_for(*c, s),
                    None => self.strictest(s),
                };
            }
        }
        Some(allowed)
    }
}

/// The residency view of a store: the geo tables of its settings and the
/// policies it holds (from the file and the control stream).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Residency {
    /// Jurisdictions and geo tables.
    pub geo: Arc<Geo>,
    /// Policies by name.
    pub policies: HashMap<Arc<str>, Arc<ResidencyPolicy>>,
    /// Every trusted header (of each policy and the geo country header, and
    /// each with `_` for `-`), removed from untrusted peers' requests on
    /// every route.
    pub trusted_headers: Vec<TrustedHeader>,
}
