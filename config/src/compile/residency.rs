//! Owns validating and compiling the residency settings of a bootstrap: the
//! geo tables, the known jurisdictions and the residency policies, each
//! error with its field path.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::Ctx;
use crate::error::FieldPath;
use crate::proto;
use crate::request::Cidr;
use crate::residency::{Geo, Residency, ResidencyPolicy, ResidencyRule, TrustedHeader};

/// Compiles the `geo` settings of a bootstrap.
pub(crate) fn compile_geo_settings(cx: &mut Ctx, b: &proto::Bootstrap) -> Geo {
    compile_geo(cx, b.geo.as_ref(), &FieldPath::root().field("geo"))
}

/// The residency view of `geo` and `policies`: every trusted header (each
/// policy's and the geo country header, each also with `_` for `-`), to be
/// removed from untrusted peers' requests on every route.
pub(crate) fn residency_view(
    geo: Arc<Geo>,
    policies: HashMap<Arc<str>, Arc<ResidencyPolicy>>,
) -> Residency {
    let mut trusted_headers: Vec<TrustedHeader> = Vec::new();
    let mut names: Vec<&Arc<str>> = policies.keys().collect();
    names.sort();
    let policy_headers = names.into_iter().flat_map(|n| {
        let p = &policies[n];
        [
            p.class_header.as_ref(),
            p.subject_header.as_ref(),
            p.tenants.as_ref().map(|t| &t.header),
        ]
    });
    for h in policy_headers
        .chain([geo.country_header.as_ref()])
        .flatten()
    {
        // `x_data_class` too: CGI-style servers read it as `X-Data-Class`.
        let alias = h.name.as_str().replace('-', "_");
        let alias = http::HeaderName::from_bytes(alias.as_bytes())
            .ok()
            .filter(|a| *a != h.name)
            .map(|name| TrustedHeader {
                name,
                trusted_from: h.trusted_from.clone(),
            });
        for h in std::iter::once(h.clone()).chain(alias) {
            if !trusted_headers.contains(&h) {
                trusted_headers.push(h);
            }
        }
    }
    Residency {
        geo,
        policies,
        trusted_headers,
    }
}

fn compile_geo(cx: &mut Ctx, g: Option<&proto::Geo>, p: &FieldPath<'_>) -> Geo {
    let Some(g) = g else { return Geo::default() };
    let names: BTreeSet<&str> = g
        .jurisdictions
        .iter()
        .chain(g.countries.values())
        .chain(g.regions.values())
        .map(String::as_str)
        .collect();
    for (i, j) in g.jurisdictions.iter().enumerate() {
        if j.is_empty() {
            cx.err(&p.item("jurisdictions", i), "a jurisdiction needs a name");
        }
    }
    // With an explicit list, the tables may only name its jurisdictions (a
    // typo must not create one that no endpoint belongs to).
    let listed = |cx: &mut Ctx, path: FieldPath<'_>, j: &str| {
        if j.is_empty() {
            cx.err(&path, "a jurisdiction needs a name");
        } else if !g.jurisdictions.is_empty() && !g.jurisdictions.iter().any(|x| x == j) {
            cx.err(
                &path,
                format!(
                    "jurisdiction `{j}` is not in geo.jurisdictions ({})",
                    g.jurisdictions.join(", ")
                ),
            );
        }
    };
    for (code, j) in &g.countries {
        listed(cx, p.entry("countries", code), j);
    }
    for (region, j) in &g.regions {
        listed(cx, p.entry("regions", region), j);
    }
    if names.len() > 64 {
        cx.err(
            &p.field("jurisdictions"),
            format!("{} jurisdictions; at most 64", names.len()),
        );
    }
    let jurisdictions: Vec<Arc<str>> = names.iter().take(64).map(|n| Arc::from(*n)).collect();
    let index = |name: &str| {
        jurisdictions
            .iter()
            .position(|j| j.as_ref() == name)
            .map(|i| i as u8)
    };
    let mut countries = HashMap::new();
    for (code, j) in &g.countries {
        let cp = p.entry("countries", code);
        let bytes = code.as_bytes();
        if bytes.len() != 2 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            cx.err(
                &cp,
                format!("`{code}` is not a two-letter ISO 3166 country code"),
            );
            continue;
        }
        if let Some(i) = index(j) {
            let key = [bytes[0].to_ascii_uppercase(), bytes[1].to_ascii_uppercase()];
            if countries.insert(key, i).is_some() {
                cx.err(
                    &cp,
                    format!("country `{code}` is listed twice (codes ignore case)"),
                );
            }
        }
    }
    let mut regions = HashMap::new();
    for (region, j) in &g.regions {
        if region.is_empty() {
            cx.err(&p.entry("regions", region), "a region needs a name");
            continue;
        }
        if let Some(i) = index(j) {
            regions.insert(Arc::from(region.as_str()), i);
        }
    }
    let country_header = g
        .country_header
        .as_ref()
        .and_then(|h| trusted_header(cx, h, &p.field("country_header")));
    let mmdb_file = (!g.mmdb_file.is_empty()).then(|| {
        super::require_file(cx, &p.field("mmdb_file"), &g.mmdb_file);
        Arc::from(g.mmdb_file.as_str())
    });
    let mut preferred_regions = HashMap::new();
    for (j, list) in &g.preferred_regions {
        let jp = p.entry("preferred_regions", j);
        let Some(i) = index(j) else {
            cx.err(
                &jp,
                format!(
                    "unknown jurisdiction `{j}`; known: {}",
                    jurisdictions.join(", ")
                ),
            );
            continue;
        };
        let mut regions: Vec<Arc<str>> = Vec::with_capacity(list.regions.len());
        for (k, r) in list.regions.iter().enumerate() {
            let bad_pair = r
                .split_once('/')
                .is_some_and(|(c, reg)| c.is_empty() || reg.is_empty() || reg.contains('/'));
            if r.is_empty() {
                cx.err(&jp.item("regions", k), "a region needs a name");
            } else if bad_pair {
                cx.err(
                    &jp.item("regions", k),
                    format!("`{r}` is neither a region nor cloud/region"),
                );
            } else if regions.iter().any(|x| x.as_ref() == r) {
                cx.err(
                    &jp.item("regions", k),
                    format!("region `{r}` is listed twice"),
                );
            } else {
                regions.push(r.as_str().into());
            }
        }
        preferred_regions.insert(i, regions);
    }
    // Prefixes, longest first, then trust domains (as the prefix of every
    // ID in the domain): the first match is the most specific.
    let mut prefixes: Vec<(Arc<str>, u8)> = Vec::new();
    let mut domains: Vec<(Arc<str>, u8)> = Vec::new();
    for (k, row) in g.identity_jurisdictions.iter().enumerate() {
        let rp = p.item("identity_jurisdictions", k);
        let Some(j) = index(&row.jurisdiction) else {
            cx.err(
                &rp.field("jurisdiction"),
                format!(
                    "unknown jurisdiction `{}`; known: {}",
                    row.jurisdiction,
                    jurisdictions.join(", ")
                ),
            );
            continue;
        };
        let entry = match (row.trust_domain.is_empty(), row.spiffe_id_prefix.is_empty()) {
            (false, true) => match crate::identity::check_trust_domain(&row.trust_domain) {
                Ok(()) => Some((
                    &mut domains,
                    format!("spiffe://{}/", row.trust_domain),
                    "trust_domain",
                )),
                Err(e) => {
                    cx.err(&rp.field("trust_domain"), e);
                    None
                }
            },
            (true, false) => {
                let prefix = &row.spiffe_id_prefix;
                let domain_ok = prefix
                    .strip_prefix("spiffe://")
                    .and_then(|rest| rest.split_once('/'))
                    .is_some_and(|(d, _)| crate::identity::check_trust_domain(d).is_ok());
                if !domain_ok || !prefix.ends_with('/') {
                    cx.err(
                        &rp.field("spiffe_id_prefix"),
                        format!(
                            "`{prefix}` must start with spiffe://<trust-domain>/ and end with `/`"
                        ),
                    );
                    None
                } else {
                    Some((&mut prefixes, prefix.clone(), "spiffe_id_prefix"))
                }
            }
            _ => {
                cx.err(&rp, "give one of trust_domain and spiffe_id_prefix");
                None
            }
        };
        if let Some((list, key, field)) = entry {
            if list.iter().any(|(k, _)| k.as_ref() == key) {
                cx.err(&rp.field(field), format!("`{key}` is listed twice"));
            } else {
                list.push((key.into(), j));
            }
        }
    }
    prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    prefixes.extend(domains);
    Geo {
        jurisdictions,
        countries,
        regions,
        country_header,
        mmdb_file,
        preferred_regions,
        identities: prefixes,
        unchecked: false,
    }
}

/// A trusted header; it needs a valid name and at least one trusted peer.
fn trusted_header(
    cx: &mut Ctx,
    h: &proto::TrustedHeader,
    p: &FieldPath<'_>,
) -> Option<TrustedHeader> {
    let name = match http::HeaderName::from_bytes(h.header.as_bytes()) {
        Ok(n) => n,
        Err(_) => {
            cx.err(
                &p.field("header"),
                format!("`{}` is not a valid header name", h.header),
            );
            return None;
        }
    };
    if h.trusted_from.is_empty() {
        cx.err(
            &p.field("trusted_from"),
            "name the peers allowed to set this header (CIDRs); from anyone else it is removed",
        );
    }
    let mut trusted_from = Vec::with_capacity(h.trusted_from.len());
    for (i, c) in h.trusted_from.iter().enumerate() {
        match Cidr::parse(c) {
            Ok(c) => trusted_from.push(c),
            Err(e) => cx.err(&p.item("trusted_from", i), e.to_string()),
        }
    }
    Some(TrustedHeader { name, trusted_from })
}

/// Compiles one residency policy against `geo`; `p` is its path.
pub(crate) fn compile_policy(
    cx: &mut Ctx,
    r: &proto::ResidencyPolicy,
    geo: &Geo,
    p: &FieldPath<'_>,
) -> Option<ResidencyPolicy> {
    use proto::residency_policy::Unclassified as U;
    if r.name.is_empty() {
        cx.err(&p.field("name"), "a residency policy needs a name");
        return None;
    }
    let class_header = r
        .data_class_header
        .as_ref()
        .and_then(|h| trusted_header(cx, h, &p.field("data_class_header")));
    let subject_header = r
        .subject_header
        .as_ref()
        .and_then(|h| trusted_header(cx, h, &p.field("subject_header")));
    if geo.unchecked {
        // A control plane: each proxy checks the geo side.
    } else if r.subject_from_geo && geo.countries.is_empty() {
        cx.err(
            &p.field("subject_from_geo"),
            "needs geo.countries to map the client's country to a jurisdiction",
        );
    } else if r.subject_from_geo && geo.country_header.is_none() && geo.mmdb_file.is_none() {
        cx.err(
            &p.field("subject_from_geo"),
            "needs a source of the client's country: geo.country_header or geo.mmdb_file",
        );
    }
    if r.rules.is_empty() {
        cx.err(&p.field("rules"), "a policy needs at least one rule");
    }
    let mut classes: Vec<Arc<str>> = Vec::new();
    let mut rules = Vec::with_capacity(r.rules.len());
    for (i, rule) in r.rules.iter().enumerate() {
        let rp = p.item("rules", i);
        if rule.data_classes.is_empty() {
            cx.err(
                &rp.field("data_classes"),
                "name the data classes this rule covers",
            );
        }
        let mut class_bits = 0u64;
        for c in &rule.data_classes {
            let idx = match classes.iter().position(|x| x.as_ref() == c.as_str()) {
                Some(i) => i,
                None => {
                    classes.push(c.as_str().into());
                    classes.len() - 1
                }
            };
            if idx < 64 {
                class_bits |= 1 << idx;
            }
        }
        let set = |cx: &mut Ctx, list: &[String], field: &str| {
            let mut bits = 0u64;
            for (k, j) in list.iter().enumerate() {
                match geo.jurisdiction(j) {
                    Some(b) => bits |= 1 << b,
                    None if geo.unchecked => {}
                    None => cx.err(
                        &rp.item(field, k),
                        format!(
                            "unknown jurisdiction `{j}`; known: {} (from geo.jurisdictions, geo.countries and geo.regions)",
                            if geo.jurisdictions.is_empty() {
                                "none".to_string()
                            } else {
                                geo.jurisdictions.join(", ")
                            }
                        ),
                    ),
                }
            }
            bits
        };
        if rule.allowed_jurisdictions.is_empty() {
            cx.err(
                &rp.field("allowed_jurisdictions"),
                "name the endpoint jurisdictions allowed to serve these classes",
            );
        }
        let allowed = set(cx, &rule.allowed_jurisdictions, "allowed_jurisdictions");
        let subjects = (!rule.subject_jurisdictions.is_empty())
            .then(|| set(cx, &rule.subject_jurisdictions, "subject_jurisdictions"));
        rules.push(ResidencyRule {
            classes: class_bits,
            subjects,
            allowed,
        });
    }
    if classes.len() > 64 {
        cx.err(
            &p.field("rules"),
            format!("{} data classes; at most 64", classes.len()),
        );
    }
    let tenants = r.tenants.as_ref().and_then(|t| {
        let tp = p.field("tenants");
        let Some(th) = t.header.as_ref() else {
            cx.err(
                &tp.field("header"),
                "name the tenant header and who may set it",
            );
            return None;
        };
        let header = trusted_header(cx, th, &tp.field("header"))?;
        let mut table = HashMap::new();
        for (name, tenant) in &t.tenants {
            let ep = tp.entry("tenants", name);
            let class = if tenant.data_class.is_empty() {
                None
            } else {
                let found = classes.iter().position(|c| c.as_ref() == tenant.data_class);
                if found.is_none() {
                    cx.err(
                        &ep.field("data_class"),
                        format!(
                            "data class `{}` is not one this policy's rules name",
                            tenant.data_class
                        ),
                    );
                }
                found
            };
            let home = if tenant.jurisdiction.is_empty() {
                None
            } else {
                let j = geo.jurisdiction(&tenant.jurisdiction);
                if j.is_none() && !geo.unchecked {
                    cx.err(
                        &ep.field("jurisdiction"),
                        format!("unknown jurisdiction `{}`", tenant.jurisdiction),
                    );
                }
                j
            };
            table.insert(Arc::from(name.as_str()), (class, home));
        }
        Some(crate::residency::Tenants { header, table })
    });
    let audit_sample_rate = r.audit_sample_rate.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&audit_sample_rate) {
        cx.err(
            &p.field("audit_sample_rate"),
            format!("{audit_sample_rate} is not a share between 0 and 1"),
        );
    }
    let restrict_unclassified = matches!(
        super::enum_value::<U>(cx, &p.field("unclassified"), r.unclassified),
        Some(U::Restrict)
    );
    Some(ResidencyPolicy {
        name: r.name.as_str().into(),
        class_header,
        subject_header,
        subject_from_geo: r.subject_from_geo,
        classes,
        rules,
        restrict_unclassified,
        dry_run: r.dry_run,
        tenants,
        audit_sample_rate,
    })
}
