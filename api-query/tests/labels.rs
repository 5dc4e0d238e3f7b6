//! Label selector grammar, errors, printing and matching, against apimachinery's behaviour
//! (cases largely from upstream `labels/selector_test.go`).

use std::collections::BTreeMap;

use api_query::{LabelSelector, Operator, Requirement, SelectorError};
use serde_json::json;

fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const VALUE_REGEX_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const NAME_REGEX_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

#[test]
fn good_selectors_print_back_without_spaces() {
    // (input, String() of the parsed selector)
    let cases: &[(&str, &str)] = &[
        ("x=a,y=b,z=c", "x=a,y=b,z=c"),
        ("", ""),
        ("x!=a,y=b", "x!=a,y=b"),
        ("x=", "x="),
        ("x= ", "x="),
        ("x=,z= ", "x=,z="),
        ("x= ,z= ", "x=,z="),
        ("!x", "!x"),
        ("x>1", "x>1"),
        ("x>1,z<5", "x>1,z<5"),
        ("x==a", "x==a"),
        ("\rx", "x"),
        ("a ", "a"),
        ("foo  in\t (abc)", "foo in (abc)"),
        ("x notin\n (abc)", "x notin (abc)"),
        ("x in (abc,def)", "x in (abc,def)"),
        ("x in (def,abc,def)", "x in (abc,def)"),
        ("x in (abc,)", "x in (,abc)"),
        ("x in ()", "x in ()"),
        ("x notin ( )", "x notin ()"),
        ("x notin (, a)", "x notin (,a)"),
        (
            "x notin (abc,,def),bar,z in (),w",
            "bar,w,x notin (,abc,def),z in ()",
        ),
        ("x,y in (a)", "x,y in (a)"),
        ("a in (x,y,notin, z,in)", "a in (in,notin,x,y,z)"),
        ("notin=in", "notin=in"),
        (
            "this-is-a-dns.domain.com/key-with-dash",
            "this-is-a-dns.domain.com/key-with-dash",
        ),
        (
            "0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock)",
            "0.1.2.domain/99 notin (10.10.100.1,tick.tack.clock)",
        ),
        (
            "app=web, tier in (fe,be), !canary",
            "app=web,!canary,tier in (be,fe)",
        ),
        ("x=a,a=x", "a=x,x=a"),
    ];
    for (input, want) in cases {
        let sel = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(sel.to_string(), *want, "{input:?}");
    }
}

#[test]
fn bad_selectors_fail_with_upstream_messages() {
    let cases: &[(&str, String)] = &[
        (
            "x=a||y=b",
            format!(
                "unable to parse requirement: values[0][x]: Invalid value: \"a||y\": {VALUE_REGEX_MSG}"
            ),
        ),
        (
            "x==a==b",
            "found '==', expected: ',' or 'end of string'".into(),
        ),
        ("!x=a", "found '=', expected: ',' or 'end of string'".into()),
        (
            "x<a",
            "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer".into(),
        ),
        (
            "x>",
            "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value must be an integer".into(),
        ),
        ("x,,y", "found ',', expected: identifier after ','".into()),
        (
            ",x,y",
            "found ',', expected: !, identifier, or 'end of string'".into(),
        ),
        (
            "x nott in (y)",
            "unable to parse requirement: found 'nott', expected: in, notin, =, ==, !=, gt, lt"
                .into(),
        ),
        ("a in (xyz),", "found '', expected: identifier after ','".into()),
        (
            "a in (xyz)b notin ()",
            "found 'b', expected: ',' or 'end of string'".into(),
        ),
        (
            "a in (xyz abc)",
            "unable to parse requirement: found 'abc', expected: ',' or ')'".into(),
        ),
        (
            "a notin(",
            "unable to parse requirement: found '', expected: ',', ')' or identifier".into(),
        ),
        (
            "a (",
            "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"
                .into(),
        ),
        (
            "(",
            "found '(', expected: !, identifier, or 'end of string'".into(),
        ),
        (
            "a in x",
            "unable to parse requirement: found 'x' expected: '('".into(),
        ),
        (
            "a=>",
            "unable to parse requirement: found '>', expected: identifier".into(),
        ),
        (
            "!",
            "unable to parse requirement: found '', expected: identifier".into(),
        ),
        (
            "-bad=x",
            format!("unable to parse requirement: <nil>: Invalid value: \"-bad\": {NAME_REGEX_MSG}"),
        ),
        (
            "a/b/c",
            "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into(),
        ),
        (
            "app in (ok,-no)",
            format!(
                "unable to parse requirement: values[0][app]: Invalid value: \"-no\": {VALUE_REGEX_MSG}"
            ),
        ),
    ];
    let long_key = "k".repeat(64);
    let long = format!("{long_key}=x");
    let long_want = format!(
        "unable to parse requirement: <nil>: Invalid value: \"{long_key}\": name part must be no more than 63 characters"
    );
    let cases = cases
        .iter()
        .map(|(i, w)| (*i, w.clone()))
        .chain([(long.as_str(), long_want)]);
    for (input, want) in cases {
        match LabelSelector::parse(input) {
            Ok(sel) => panic!("{input:?} parsed as {sel}"),
            Err(SelectorError::Label(msg)) => assert_eq!(msg, want, "{input:?}"),
            Err(other) => panic!("{input:?}: wrong error kind {other:?}"),
        }
    }
}

#[test]
fn parsed_requirements() {
    let sel = LabelSelector::parse("x notin (abc,,def),bar,z in (),w").unwrap();
    let reqs: Vec<(&str, Operator, Vec<&str>)> = sel
        .requirements()
        .iter()
        .map(|r| {
            (
                r.key(),
                r.operator(),
                r.values().iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        reqs,
        [
            ("bar", Operator::Exists, vec![]),
            ("w", Operator::Exists, vec![]),
            ("x", Operator::NotIn, vec!["", "abc", "def"]),
            ("z", Operator::In, vec![""]),
        ]
    );
}

#[test]
fn matching() {
    /// (selector, labels, matches)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
    let cases: &[Case<'_>] = &[
        ("", &[("x", "y")], true),
        ("", &[], true),
        ("x=y", &[("x", "y")], true),
        ("x=y,z=w", &[("x", "y"), ("z", "w")], true),
        ("x!=y,z!=w", &[("x", "z"), ("z", "a")], true),
        ("notin=in", &[("notin", "in")], true),
        ("x", &[("x", "z")], true),
        ("!x", &[("y", "z")], true),
        ("x>1", &[("x", "2")], true),
        ("x<1", &[("x", "0")], true),
        ("x=z", &[], false),
        ("x=y", &[("x", "z")], false),
        ("x=y,z=w", &[("x", "w"), ("z", "w")], false),
        ("x!=y,z!=w", &[("x", "z"), ("z", "w")], false),
        ("x", &[("y", "z")], false),
        ("!x", &[("x", "z")], false),
        ("x>1", &[("x", "0")], false),
        ("x<1", &[("x", "2")], false),
        ("z>1", &[("z", "v2")], false),
        ("x>1", &[], false),
        ("x!=y", &[], true),
        ("x notin (a)", &[], true),
        ("x notin (a)", &[("x", "a")], false),
        ("x notin ()", &[("y", "")], true),
        ("x in ()", &[("x", "")], true),
        ("x in ()", &[("y", "baz")], false),
        ("x=", &[("x", "")], true),
        ("x=", &[], false),
        ("tier in (fe,be),app", &[("tier", "be"), ("app", "a")], true),
        (
            "tier in (fe,be),app",
            &[("tier", "db"), ("app", "a")],
            false,
        ),
        (
            "foo=bar,foobar=bar,baz=blah",
            &[("foo", "bar"), ("baz", "blah")],
            false,
        ),
    ];
    for (selector, labels, want) in cases {
        let sel = LabelSelector::parse(selector).unwrap();
        assert_eq!(
            sel.matches(&set(labels)),
            *want,
            "{selector:?} vs {labels:?}"
        );
    }
}

#[test]
fn matches_json_objects() {
    let pod = json!({"metadata": {"name": "p", "labels": {"app": "web", "n": 3}}});
    assert!(LabelSelector::parse("app=web")
        .unwrap()
        .matches_object(&pod));
    assert!(!LabelSelector::parse("app=db").unwrap().matches_object(&pod));
    // Non-string label values cannot be labels.
    assert!(!LabelSelector::parse("n").unwrap().matches_object(&pod));
    let unlabelled = json!({"metadata": {"name": "q"}});
    assert!(LabelSelector::parse("")
        .unwrap()
        .matches_object(&unlabelled));
    assert!(LabelSelector::parse("!app")
        .unwrap()
        .matches_object(&unlabelled));
    assert!(!LabelSelector::parse("app")
        .unwrap()
        .matches_object(&unlabelled));
}

#[test]
fn label_selector_objects() {
    let sel = LabelSelector::from_label_selector(&json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "zone", "operator": "Exists"}
        ]
    }))
    .unwrap();
    assert_eq!(
        sel.to_string(),
        "app=web,!canary,env notin (dev),tier in (be,fe),zone"
    );
    assert!(sel.matches(&set(&[("app", "web"), ("tier", "fe"), ("zone", "a")])));
    assert!(!sel.matches(&set(&[
        ("app", "web"),
        ("tier", "fe"),
        ("zone", "a"),
        ("canary", "y")
    ])));

    // An empty selector selects everything, a null one nothing.
    let everything = LabelSelector::from_label_selector(&json!({})).unwrap();
    assert!(everything.is_everything());
    assert!(everything.matches(&set(&[])));
    let nothing = LabelSelector::from_label_selector(&json!(null)).unwrap();
    assert!(nothing.is_nothing());
    assert!(!nothing.matches(&set(&[("a", "b")])));
    assert_eq!(nothing.to_string(), "");

    let bad_op = LabelSelector::from_label_selector(&json!({
        "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]
    }));
    assert_eq!(
        bad_op.unwrap_err().to_string(),
        "\"Gt\" is not a valid label selector operator"
    );
    let empty_in = LabelSelector::from_label_selector(&json!({
        "matchExpressions": [{"key": "a", "operator": "In", "values": []}]
    }));
    assert_eq!(
        empty_in.unwrap_err().to_string(),
        "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
    );
    let exists_with_values = LabelSelector::from_label_selector(&json!({
        "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
    }));
    assert_eq!(
        exists_with_values.unwrap_err().to_string(),
        "values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist"
    );
    let bad_key = LabelSelector::from_label_selector(&json!({"matchLabels": {"-a": "b"}}));
    assert_eq!(
        bad_key.unwrap_err().to_string(),
        format!("key: Invalid value: \"-a\": {NAME_REGEX_MSG}")
    );
    let two_errors = LabelSelector::from_label_selector(&json!({"matchLabels": {"-a": "-b"}}));
    assert_eq!(
        two_errors.unwrap_err().to_string(),
        format!(
            "[key: Invalid value: \"-a\": {NAME_REGEX_MSG}, values[0][-a]: Invalid value: \"-b\": {VALUE_REGEX_MSG}]"
        )
    );
}

#[test]
fn requirement_constructor() {
    assert!(Requirement::new("x", Operator::In, vec!["a".into()]).is_ok());
    assert_eq!(
        Requirement::new("x5", Operator::Equals, vec!["foo".into(), "bar".into()])
            .unwrap_err()
            .to_string(),
        "values: Invalid value: []string{\"foo\", \"bar\"}: exact-match compatibility requires one single value"
    );
    assert_eq!(
        Requirement::new("x13", Operator::GreaterThan, vec![])
            .unwrap_err()
            .to_string(),
        "values: Invalid value: []string{}: for 'Gt', 'Lt' operators, exactly one value is required"
    );
    assert_eq!(
        Requirement::new("x17", Operator::Equals, vec!["a b".into()])
            .unwrap_err()
            .to_string(),
        format!("values[0][x17]: Invalid value: \"a b\": {VALUE_REGEX_MSG}")
    );
}

#[test]
fn from_set_and_exact_match() {
    let sel = LabelSelector::from_set([("app", "foo"), ("a", "b")]);
    assert_eq!(sel.to_string(), "a=b,app=foo");
    assert!(sel.matches(&set(&[("app", "foo"), ("a", "b"), ("x", "y")])));
    assert!(LabelSelector::from_set([]).is_everything());
    assert!(LabelSelector::default().is_everything());
    assert!(LabelSelector::parse("").unwrap().is_everything());

    let sel = LabelSelector::parse("key in (value),key2=v2,key3 in (a,b),key4!=x").unwrap();
    assert_eq!(sel.requires_exact_match("key"), Some("value"));
    assert_eq!(sel.requires_exact_match("key2"), Some("v2"));
    assert_eq!(sel.requires_exact_match("key3"), None);
    assert_eq!(sel.requires_exact_match("key4"), None);
    assert_eq!(sel.requires_exact_match("nope"), None);
}

#[test]
fn formatting_helpers() {
    assert_eq!(
        api_query::format_label_selector(Some(&json!({"matchLabels": {"b": "2", "a": "1"}}))),
        "a=1,b=2"
    );
    assert_eq!(api_query::format_label_selector(Some(&json!({}))), "<none>");
    assert_eq!(api_query::format_label_selector(None), "<none>");
    assert_eq!(
        api_query::format_label_selector(Some(
            &json!({"matchExpressions": [{"key": "a", "operator": "Bad"}]})
        )),
        "<error>"
    );
    assert_eq!(
        api_query::format_labels(Some(&json!({"tier": "fe", "app": "web"}))),
        "app=web,tier=fe"
    );
    assert_eq!(api_query::format_labels(Some(&json!({}))), "<none>");
}
