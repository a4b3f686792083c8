use super::*;

#[test]
fn positions_are_one_based_lines_and_columns() {
    let text = "a: 1\nlist:\n  - x: \"2\"\n    y: [3, 4]\n";
    let root = parse(text).unwrap();
    let Value::Map(entries) = &root.value else {
        panic!("root is a map")
    };
    assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
    assert_eq!(entries[0].1.pos, Pos { line: 1, column: 4 });
    let Value::Seq(items) = &entries[1].1.value else {
        panic!("list")
    };
    let Value::Map(item) = &items[0].value else {
        panic!("map item")
    };
    assert_eq!(item[0].1.pos, Pos { line: 3, column: 8 });
    assert!(matches!(&item[0].1.value, Value::Scalar { text, plain: false } if text == "2"));
    assert_eq!(item[1].0.pos, Pos { line: 4, column: 5 });
}

#[test]
fn aliases_expand_and_empty_is_empty_map() {
    let root = parse("base: &b {k: v}\ncopy: *b\n").unwrap();
    let Value::Map(entries) = &root.value else {
        panic!()
    };
    assert!(matches!(&entries[1].1.value, Value::Map(m) if m.len() == 1));
    assert!(matches!(parse("").unwrap().value, Value::Map(m) if m.is_empty()));
}

#[test]
fn syntax_errors_have_positions() {
    let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
    assert!(err.pos.line >= 2, "{err:?}");
    assert!(!err.message.is_empty());
}

#[test]
fn alias_bombs_are_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains("beyond"), "{err:?}");
}
