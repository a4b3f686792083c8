//! `HeaderMutation::apply` on an `http::HeaderMap` against a model: a list of
//! (name, value) pairs where Remove drops every pair of the name, Set drops
//! them and appends one, Add appends one. After the edits, every name's values
//! must be the model's, in the model's order; applying two mutations one after
//! the other must equal applying their `extend`ed concatenation.
#![no_main]

use arbitrary::Arbitrary;
use corridor_config::{HeaderMutation, HeaderOp};
use corridor_fuzz::{NameIn, ValueIn};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum OpIn {
    Remove(NameIn),
    Set(NameIn, ValueIn),
    Add(NameIn, ValueIn),
}

#[derive(Debug, Arbitrary)]
struct Input {
    initial: Vec<(NameIn, ValueIn)>,
    ops: Vec<OpIn>,
    /// Where the ops are split into two mutations for the `extend` check.
    split: u8,
}

type Model = Vec<(HeaderName, HeaderValue)>;

fn model_apply(model: &mut Model, op: &HeaderOp) {
    match op {
        HeaderOp::Remove(n) => model.retain(|(m, _)| m != n),
        HeaderOp::Set(n, v) => {
            model.retain(|(m, _)| m != n);
            model.push((n.clone(), v.clone()));
        }
        HeaderOp::Add(n, v) => model.push((n.clone(), v.clone())),
    }
}

fn check(map: &HeaderMap, model: &Model, ops: &[HeaderOp]) {
    assert_eq!(map.len(), model.len(), "value count differs after {ops:?}");
    let mut names: Vec<&HeaderName> = model.iter().map(|(n, _)| n).collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    assert_eq!(
        map.keys_len(),
        names.len(),
        "name count differs after {ops:?}"
    );
    for name in names {
        let got: Vec<&HeaderValue> = map.get_all(name).iter().collect();
        let want: Vec<&HeaderValue> = model
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(got, want, "values of `{name}` after {ops:?}");
    }
}

fuzz_target!(|input: Input| {
    let mut map = HeaderMap::new();
    let mut model: Model = Vec::new();
    for (n, v) in &input.initial {
        if let (Some(n), Some(v)) = (n.build(), v.build()) {
            map.append(n.clone(), v.clone());
            model.push((n, v));
        }
    }
    let ops: Vec<HeaderOp> = input
        .ops
        .iter()
        .filter_map(|op| {
            Some(match op {
                OpIn::Remove(n) => HeaderOp::Remove(n.build()?),
                OpIn::Set(n, v) => HeaderOp::Set(n.build()?, v.build()?),
                OpIn::Add(n, v) => HeaderOp::Add(n.build()?, v.build()?),
            })
        })
        .collect();
    let before = map.clone();

    let m = HeaderMutation { ops: ops.clone() };
    assert_eq!(m.is_empty(), ops.is_empty());
    let Ok(()) = m.apply(&mut map);
    for op in &ops {
        model_apply(&mut model, op);
    }
    check(&map, &model, &ops);

    // Two mutations applied in turn equal their concatenation.
    let at = if ops.is_empty() {
        0
    } else {
        input.split as usize % (ops.len() + 1)
    };
    let first = HeaderMutation {
        ops: ops[..at].to_vec(),
    };
    let second = HeaderMutation {
        ops: ops[at..].to_vec(),
    };
    let mut stepwise = before.clone();
    let Ok(()) = first.apply(&mut stepwise);
    let Ok(()) = second.apply(&mut stepwise);
    let mut joined = first.clone();
    joined.extend(&second);
    assert_eq!(joined.ops, ops);
    let mut at_once = before;
    let Ok(()) = joined.apply(&mut at_once);
    check(&stepwise, &model, &ops);
    check(&at_once, &model, &ops);
});
