//! Owns compiling a route's match conditions: path (prefix, exact, full
//! regex), methods, header and query conditions (one shared rule set, so both
//! reject an empty condition and `present: false`), and client address ranges.

use http::{HeaderName, Method};

use super::Ctx;
use crate::error::FieldPath;
use crate::proto;
use crate::request::Cidr;
use crate::route::{
    full_regex, HeaderCondition, PathMatch, QueryCondition, RouteMatch, ValueMatch,
};

pub(super) fn compile_match(
    cx: &mut Ctx,
    m: Option<&proto::RouteMatch>,
    p: &FieldPath<'_>,
) -> RouteMatch {
    use proto::route_match::PathSpecifier as PS;
    let Some(m) = m else {
        return RouteMatch {
            path: PathMatch::Any,
            methods: Vec::new(),
            headers: Vec::new(),
            query: Vec::new(),
            clients: Vec::new(),
        };
    };
    let path = match &m.path_specifier {
        None => PathMatch::Any,
        Some(PS::Prefix(s)) if s.is_empty() || s == "/" => {
            if s.is_empty() {
                PathMatch::Any
            } else {
                PathMatch::Prefix(s.as_str().into())
            }
        }
        Some(PS::Prefix(s)) | Some(PS::Path(s)) if !s.starts_with('/') => {
            let field = if matches!(m.path_specifier, Some(PS::Prefix(_))) {
                "prefix"
            } else {
                "path"
            };
            cx.err(&p.field(field), format!("`{s}` must start with `/`"));
            PathMatch::Any
        }
        Some(PS::Prefix(s)) => PathMatch::Prefix(s.as_str().into()),
        Some(PS::Path(s)) => PathMatch::Exact(s.as_str().into()),
        Some(PS::Regex(r)) => match full_regex(r) {
            Ok(re) => PathMatch::Regex(re),
            Err(e) => {
                cx.err(
                    &p.field("regex"),
                    format!("invalid regex: {}", one_line(&e.to_string())),
                );
                PathMatch::Any
            }
        },
    };
    let mut methods = Vec::new();
    for (i, meth) in m.methods.iter().enumerate() {
        match Method::from_bytes(meth.to_ascii_uppercase().as_bytes()) {
            Ok(mm) if !meth.is_empty() => methods.push(mm),
            _ => cx.err(&p.item("methods", i), format!("invalid method `{meth}`")),
        }
    }
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let hp = p.item("headers", i);
        let Some(name) = header_name(cx, &hp.field("name"), &h.name) else {
            continue;
        };
        use proto::header_matcher::Match as HM;
        let cond = h.r#match.as_ref().map(|m| match m {
            HM::Exact(s) => Cond::Exact(s),
            HM::Prefix(s) => Cond::Prefix(s),
            HM::Regex(s) => Cond::Regex(s),
            HM::Present(b) => Cond::Present(*b),
            HM::Absent(b) => Cond::Absent(*b),
        });
        let value = value_match(cx, &hp, cond);
        if let Some(value) = value {
            headers.push(HeaderCondition {
                name,
                value,
                invert: h.invert,
            });
        }
    }
    let mut query = Vec::new();
    for (i, q) in m.query_parameters.iter().enumerate() {
        let qp = p.item("query_parameters", i);
        if q.name.is_empty() {
            cx.err(&qp.field("name"), "a query parameter name is required");
            continue;
        }
        use proto::query_parameter_matcher::Match as QM;
        let cond = q.r#match.as_ref().map(|m| match m {
            QM::Exact(s) => Cond::Exact(s),
            QM::Prefix(s) => Cond::Prefix(s),
            QM::Regex(s) => Cond::Regex(s),
            QM::Present(b) => Cond::Present(*b),
            QM::Absent(b) => Cond::Absent(*b),
        });
        let value = value_match(cx, &qp, cond);
        if let Some(value) = value {
            query.push(QueryCondition {
                name: q.name.as_str().into(),
                value,
            });
        }
    }
    let mut clients = Vec::new();
    for (i, c) in m.client_cidrs.iter().enumerate() {
        match Cidr::parse(c) {
            Ok(c) => clients.push(c),
            Err(e) => cx.err(&p.item("client_cidrs", i), e.to_string()),
        }
    }
    RouteMatch {
        path,
        methods,
        headers,
        query,
        clients,
    }
}

/// One header or query condition as configured (the two protos share this shape).
enum Cond<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
    Present(bool),
    Absent(bool),
}

/// Compiles a header or query condition; both reject a missing condition and
/// `present: false` / `absent: false`, which could never apply as written.
fn value_match(cx: &mut Ctx, p: &FieldPath<'_>, cond: Option<Cond<'_>>) -> Option<ValueMatch> {
    match cond {
        Some(Cond::Exact(s)) => Some(ValueMatch::Exact(s.into())),
        Some(Cond::Prefix(s)) => Some(ValueMatch::Prefix(s.into())),
        Some(Cond::Regex(s)) => regex_match(cx, &p.field("regex"), s),
        Some(Cond::Present(true)) => Some(ValueMatch::Present),
        Some(Cond::Absent(true)) => Some(ValueMatch::Absent),
        Some(Cond::Present(false) | Cond::Absent(false)) => {
            cx.err(
                p,
                "`present: false` and `absent: false` never apply; use `absent: true` or `present: true`",
            );
            None
        }
        None => {
            cx.err(p, "set one of exact, prefix, regex, present or absent");
            None
        }
    }
}

fn regex_match(cx: &mut Ctx, p: &FieldPath<'_>, s: &str) -> Option<ValueMatch> {
    match full_regex(s) {
        Ok(re) => Some(ValueMatch::Regex(re)),
        Err(e) => {
            cx.err(p, format!("invalid regex: {}", one_line(&e.to_string())));
            None
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) fn header_name(cx: &mut Ctx, p: &FieldPath<'_>, name: &str) -> Option<HeaderName> {
    if name.is_empty() {
        cx.err(p, "a header name is required");
        return None;
    }
    if name.starts_with(':') {
        cx.err(
            p,
            format!("pseudo-header `{name}` cannot be used here; match the path or host instead"),
        );
        return None;
    }
    match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            cx.err(p, format!("invalid header name `{name}`"));
            None
        }
    }
}
