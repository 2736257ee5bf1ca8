//! The rule language: what it refuses (and where it points), each operator on each kind
//! of attribute, and the decision semantics with their trace.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone as _, Utc};
use d2_kernel::AccountId;
use serde_json::{Value, json};

use super::RuleError;
use super::decision::{AccessRequest, AgentFacts, PrincipalFacts, Reason, RuleSet, Step};
use super::rule::{AccessRule, Effect, Format, RuleSpec};
use crate::agent::AgentId;
use crate::principal::PrincipalId;

fn parse(value: Value) -> Result<RuleSpec, RuleError> {
    RuleSpec::from_value(&value)
}

/// The pointer and message of the refusal of `value`.
#[track_caller]
fn refused(value: Value) -> (String, String) {
    let error = parse(value).unwrap_err();
    (error.pointer, error.message)
}

#[track_caller]
fn refused_at(value: Value, pointer: &str, words: &str) {
    let (at, message) = refused(value);
    assert_eq!(at, pointer, "{message}");
    assert!(message.contains(words), "`{words}` not in: {message}");
}

fn test(attr: &str, op: &str, value: Value) -> Value {
    json!({"name": "t", "effect": "deny", "when": {"attr": attr, "op": op, "value": value}})
}

/// A Wednesday, 14:30 UTC.
fn wednesday_afternoon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 14, 30, 0).unwrap()
}

fn agent_id() -> AgentId {
    "0f6e8d3a-3a5e-4c69-9b39-2e1c2d7f0a11".parse().unwrap()
}

fn principal_id() -> PrincipalId {
    "5b1f0d2c-7a8e-4b2d-8c4e-9f3a1b2c3d4e".parse().unwrap()
}

fn request() -> AccessRequest {
    AccessRequest {
        agent: AgentFacts {
            id: agent_id(),
            name: "Billing bot".into(),
            attributes:
                json!({"tier": "gold", "level": 3, "labels": ["finance", "eu"], "nothing": null})
                    .as_object()
                    .unwrap()
                    .clone(),
        },
        principal: Some(PrincipalFacts {
            id: principal_id(),
            attributes: json!({"department": "finance", "clearance": 2.5})
                .as_object()
                .unwrap()
                .clone(),
        }),
        scopes: ["reports.read", "reports.export", "mail.send"]
            .map(String::from)
            .into(),
        tools: ["search", "calculator"].map(String::from).into(),
        resource: Some("https://api.example.com/reports".into()),
        grant_type: "client_credentials".into(),
        task_id: Some("task-42".into()),
        parent_task_id: None,
        now: wednesday_afternoon(),
    }
}

/// Whether the one test `attr op value` holds for [`request`].
#[track_caller]
fn holds(attr: &str, op: &str, value: Value) -> bool {
    holds_for(attr, op, value, &request())
}

#[track_caller]
fn holds_for(attr: &str, op: &str, value: Value, request: &AccessRequest) -> bool {
    let spec = parse(test(attr, op, value))
        .map_err(|e| format!("{attr} {op}: {e}"))
        .unwrap();
    let set = RuleSet::new([AccessRule::new(AccountId::random(), spec, request.now)]);
    !set.decide(request).allowed
}

#[test]
fn a_rule_is_read_from_json_and_from_yaml_alike_and_written_back_canonically() {
    let yaml = b"name: night exports\ndescription: No exports at night\npriority: 5\neffect: deny\nwhen:\n  all:\n    - attr: request.scopes\n      op: contains\n      value: reports.export\n    - attr: time.hour\n      op: lt\n      value: 6\n";
    let json = br#"{"name": "night exports", "description": "No exports at night", "priority": 5,
        "effect": "deny", "when": {"all": [
            {"attr": "request.scopes", "op": "contains", "value": "reports.export"},
            {"attr": "time.hour", "op": "lt", "value": 6}]}}"#;
    let from_yaml = RuleSpec::parse(yaml, Format::Yaml).unwrap();
    let from_json = RuleSpec::parse(json, Format::Json).unwrap();
    assert_eq!(from_yaml, from_json);
    assert!(from_json.enabled, "enabled by default");
    assert_eq!(from_json.priority, 5);
    assert_eq!(from_json.effect, Effect::Deny);
    // What the stores keep reads back to the same rule.
    let stored = from_json.to_json();
    assert_eq!(RuleSpec::from_value(&stored).unwrap(), from_json);
    assert_eq!(stored["when"]["all"][1]["attr"], "time.hour");
}

#[test]
fn unreadable_documents_are_refused_with_what_is_wrong() {
    let error = RuleSpec::parse(b"{\"name\": ", Format::Json).unwrap_err();
    assert!(error.message.contains("not valid JSON"), "{error}");
    let error = RuleSpec::parse(b"name: [unclosed", Format::Yaml).unwrap_err();
    assert!(error.message.contains("not valid YAML"), "{error}");
    let error = RuleSpec::parse(&[0xff, 0xfe], Format::Yaml).unwrap_err();
    assert!(error.message.contains("UTF-8"), "{error}");
    let big = vec![b' '; super::rule::limits::DOCUMENT_BYTES + 1];
    let error = RuleSpec::parse(&big, Format::Json).unwrap_err();
    assert!(error.message.contains("at most"), "{error}");
    refused_at(json!([1]), "", "a rule is an object");
    // A NUL spelled as a YAML escape is found after parsing.
    let error = RuleSpec::parse(b"name: \"a\\0b\"\neffect: deny\n", Format::Yaml).unwrap_err();
    assert_eq!(error.pointer, "/name");
}

#[test]
fn each_member_of_a_rule_is_checked_where_it_is() {
    refused_at(json!({"effect": "deny"}), "", "needs a `name`");
    refused_at(json!({"name": "", "effect": "deny"}), "/name", "1 to 100");
    refused_at(
        json!({"name": "x".repeat(101), "effect": "deny"}),
        "/name",
        "1 to 100",
    );
    refused_at(json!({"name": 3, "effect": "deny"}), "/name", "text");
    refused_at(json!({"name": "a"}), "", "needs an `effect`");
    refused_at(
        json!({"name": "a", "effect": "maybe"}),
        "/effect",
        "unknown effect",
    );
    refused_at(
        json!({"name": "a", "effect": "deny", "priority": 1.5}),
        "/priority",
        "whole number",
    );
    refused_at(
        json!({"name": "a", "effect": "deny", "priority": 2_000_000}),
        "/priority",
        "whole number",
    );
    refused_at(
        json!({"name": "a", "effect": "deny", "enabled": "yes"}),
        "/enabled",
        "true or false",
    );
    refused_at(
        json!({"name": "a", "effect": "deny", "colour": "red"}),
        "/colour",
        "unknown member",
    );
    refused_at(
        json!({"name": "a", "effect": "deny", "description": "d".repeat(1_001)}),
        "/description",
        "1000",
    );
    refused_at(
        json!({"name": "a", "effect": "narrow"}),
        "/scopes",
        "needs `scopes`",
    );
    refused_at(
        json!({"name": "a", "effect": "narrow", "scopes": []}),
        "/scopes",
        "needs `scopes`",
    );
    refused_at(
        json!({"name": "a", "effect": "deny", "scopes": ["x"]}),
        "/scopes",
        "narrow` rules only",
    );
    refused_at(
        json!({"name": "a", "effect": "narrow", "scopes": ["ok", "not ok"]}),
        "/scopes/1",
        "not a scope",
    );
    // Names are trimmed; a rule without `when` applies to every request.
    let spec = parse(json!({"name": "  everything  ", "effect": "allow"})).unwrap();
    assert_eq!(spec.name, "everything");
    assert!(spec.when.is_none());
}

#[test]
fn conditions_are_refused_at_the_node_that_is_wrong() {
    let rule = |when: Value| json!({"name": "r", "effect": "deny", "when": when});
    refused_at(rule(json!("always")), "/when", "a condition is an object");
    refused_at(rule(json!({"all": []})), "/when/all", "at least one");
    refused_at(
        rule(json!({"any": {"attr": "agent.name"}})),
        "/when/any",
        "list of conditions",
    );
    refused_at(
        rule(json!({"all": [{"attr": "agent.name", "op": "eq", "value": "a"}], "any": []})),
        "/when/any",
        "stands alone",
    );
    refused_at(
        rule(
            json!({"all": [{"attr": "agent.name", "op": "eq", "value": "a"},
                            {"attr": "agent.name", "op": "like", "value": "a"}]}),
        ),
        "/when/all/1/op",
        "unknown op `like`",
    );
    refused_at(
        rule(json!({"not": {"attr": "agent.colour", "op": "eq", "value": "a"}})),
        "/when/not/attr",
        "unknown attribute `agent.colour`",
    );
    refused_at(
        rule(json!({"attr": "agent.name", "op": "eq"})),
        "/when",
        "needs a `value`",
    );
    refused_at(
        rule(json!({"op": "eq", "value": 1})),
        "/when",
        "needs `attr`",
    );
    refused_at(
        rule(json!({"attr": "agent.name", "value": 1})),
        "/when",
        "needs `op`",
    );
    refused_at(
        rule(json!({"attr": "agent.name", "op": "eq", "value": "a", "extra": 1})),
        "/when/extra",
        "unknown member",
    );
    refused_at(
        rule(json!({"attr": "principal.attributes.", "op": "exists"})),
        "/when/attr",
        "unknown attribute",
    );
    // Member names in pointers are escaped (RFC 6901).
    refused_at(
        rule(json!({"attr": "agent.name", "op": "eq", "value": "a", "a/b~": 1})),
        "/when/a~1b~0",
        "unknown member",
    );
}

#[test]
fn type_mismatches_are_refused_at_write_time() {
    refused_at(
        test("agent.name", "gt", json!(3)),
        "/when/op",
        "`gt` does not apply",
    );
    refused_at(
        test("request.scopes", "eq", json!("a")),
        "/when/op",
        "a set of texts",
    );
    refused_at(
        test("time.now", "eq", json!("2026-01-01T00:00:00Z")),
        "/when/op",
        "does not apply",
    );
    refused_at(
        test("time.weekday", "lt", json!("fri")),
        "/when/op",
        "does not apply",
    );
    refused_at(
        test("agent.attributes.level", "gt", json!("3")),
        "/when/value",
        "a number",
    );
    refused_at(test("time.hour", "eq", json!(24)), "/when/value", "0 to 23");
    refused_at(
        test("time.hour", "gte", json!("9")),
        "/when/value",
        "0 to 23",
    );
    refused_at(
        test("time.weekday", "eq", json!("monday")),
        "/when/value",
        "mon, tue",
    );
    refused_at(
        test("time.now", "gt", json!("yesterday")),
        "/when/value",
        "RFC 3339",
    );
    refused_at(
        test("agent.id", "eq", json!("billing")),
        "/when/value",
        "uuid",
    );
    refused_at(test("agent.name", "eq", json!(1)), "/when/value", "a text");
    refused_at(
        test("agent.name", "in", json!("a")),
        "/when/value",
        "a list",
    );
    refused_at(
        test("agent.name", "in", json!([])),
        "/when/value",
        "1 to 100",
    );
    refused_at(
        test("agent.name", "in", json!(["a", 2])),
        "/when/value/1",
        "a text",
    );
    refused_at(
        test("request.tools", "contains_any", json!(["a", {}])),
        "/when/value/1",
        "a text",
    );
    refused_at(
        test("agent.attributes.tier", "in", json!([{"a": 1}])),
        "/when/value/0",
        "a text, a number",
    );
    refused_at(
        test("agent.name", "exists", json!("yes")),
        "/when/value",
        "`true`",
    );
    refused_at(
        test("agent.name", "eq", json!("x".repeat(1_025))),
        "/when/value",
        "1024",
    );
    refused_at(
        test("agent.name", "matches", json!("(unclosed")),
        "/when/value",
        "not a valid pattern",
    );
    refused_at(
        test("agent.name", "matches", json!("a".repeat(257))),
        "/when/value",
        "256",
    );
    refused_at(
        test("agent.name", "matches", json!("\\w{1000}{1000}")),
        "/when/value",
        "not a valid pattern",
    );
}

#[test]
fn trees_deeper_than_eight_levels_or_larger_than_a_hundred_nodes_are_refused() {
    let leaf = json!({"attr": "agent.name", "op": "eq", "value": "a"});
    let nest = |levels: usize| (1..levels).fold(leaf.clone(), |inner, _| json!({"not": inner}));
    assert!(parse(json!({"name": "r", "effect": "deny", "when": nest(8)})).is_ok());
    let pointer = format!("/when{}", "/not".repeat(8));
    refused_at(
        json!({"name": "r", "effect": "deny", "when": nest(9)}),
        &pointer,
        "at most 8 levels",
    );

    let items = |n: usize| Value::Array(vec![leaf.clone(); n]);
    assert!(parse(json!({"name": "r", "effect": "deny", "when": {"any": items(99)}})).is_ok());
    refused_at(
        json!({"name": "r", "effect": "deny", "when": {"any": items(100)}}),
        "/when/any/99",
        "at most 100 conditions",
    );
}

#[test]
fn each_path_reads_its_part_of_the_request() {
    assert!(holds("agent.id", "eq", json!(agent_id().to_string())));
    assert!(holds("agent.name", "eq", json!("Billing bot")));
    assert!(holds("agent.attributes.tier", "eq", json!("gold")));
    assert!(holds(
        "principal.id",
        "eq",
        json!(principal_id().to_string())
    ));
    assert!(holds(
        "principal.attributes.department",
        "eq",
        json!("finance")
    ));
    assert!(holds("request.scopes", "contains", json!("mail.send")));
    assert!(holds("request.tools", "contains", json!("search")));
    assert!(holds(
        "request.resource",
        "starts_with",
        json!("https://api.example.com/")
    ));
    assert!(holds(
        "request.grant_type",
        "eq",
        json!("client_credentials")
    ));
    assert!(holds("task.id", "eq", json!("task-42")));
    assert!(holds("task.parent_id", "exists", json!(false)));
    assert!(holds("time.hour", "eq", json!(14)));
    assert!(holds("time.weekday", "eq", json!("wed")));
    assert!(holds("time.now", "gt", json!("2026-12-02T14:29:59Z")));
    assert!(!holds("time.now", "lt", json!("2026-12-02T14:30:00+01:00")));
}

#[test]
fn each_operator_holds_when_it_should_and_only_then() {
    // Texts.
    assert!(holds("agent.name", "ne", json!("Other")));
    assert!(!holds("agent.name", "ne", json!("Billing bot")));
    assert!(holds("agent.name", "in", json!(["x", "Billing bot"])));
    assert!(!holds("agent.name", "not_in", json!(["x", "Billing bot"])));
    assert!(holds("agent.name", "contains", json!("ing b")));
    assert!(holds("agent.name", "ends_with", json!("bot")));
    assert!(!holds("agent.name", "starts_with", json!("bot")));
    assert!(holds("agent.name", "matches", json!("^Bill(ing)? [a-z]+$")));
    assert!(!holds("agent.name", "matches", json!("^bot")));
    // Ids.
    assert!(holds("agent.id", "in", json!([agent_id().to_string()])));
    assert!(holds(
        "principal.id",
        "not_in",
        json!([agent_id().to_string()])
    ));
    assert!(holds("agent.id", "ne", json!(principal_id().to_string())));
    // Sets.
    assert!(holds(
        "request.scopes",
        "contains_any",
        json!(["x", "reports.read"])
    ));
    assert!(!holds(
        "request.scopes",
        "contains_all",
        json!(["reports.read", "x"])
    ));
    assert!(holds(
        "request.scopes",
        "contains_all",
        json!(["reports.read", "mail.send"])
    ));
    assert!(holds("request.tools", "exists", json!(true)));
    let mut no_tools = request();
    no_tools.tools.clear();
    assert!(holds_for(
        "request.tools",
        "exists",
        json!(false),
        &no_tools
    ));
    // Hours and weekdays.
    assert!(holds("time.hour", "gte", json!(14)));
    assert!(!holds("time.hour", "gt", json!(14)));
    assert!(holds("time.hour", "lte", json!(14)));
    assert!(!holds("time.hour", "lt", json!(14)));
    assert!(holds("time.hour", "in", json!([9, 14])));
    assert!(holds("time.hour", "not_in", json!([0, 1])));
    assert!(holds("time.hour", "ne", json!(3)));
    assert!(holds("time.weekday", "in", json!(["mon", "wed"])));
    assert!(holds("time.weekday", "not_in", json!(["sat", "sun"])));
    assert!(holds("time.weekday", "ne", json!("sun")));
    // Instants.
    assert!(holds("time.now", "gte", json!("2026-12-02T14:30:00Z")));
    assert!(holds("time.now", "lte", json!("2026-12-02T14:30:00Z")));
    // JSON attributes: numbers by value, arrays, texts, presence.
    assert!(holds("agent.attributes.level", "eq", json!(3.0)));
    assert!(holds("agent.attributes.level", "gt", json!(2)));
    assert!(holds("principal.attributes.clearance", "lt", json!(3)));
    assert!(holds("agent.attributes.level", "in", json!([1, 3])));
    assert!(holds("agent.attributes.labels", "contains", json!("eu")));
    assert!(holds(
        "agent.attributes.labels",
        "contains_any",
        json!(["us", "eu"])
    ));
    assert!(!holds(
        "agent.attributes.labels",
        "contains_all",
        json!(["us", "eu"])
    ));
    assert!(holds(
        "agent.attributes.labels",
        "eq",
        json!(["finance", "eu"])
    ));
    assert!(holds("agent.attributes.tier", "contains", json!("ol")));
    assert!(holds("agent.attributes.tier", "starts_with", json!("go")));
    assert!(holds("agent.attributes.tier", "matches", json!("^g")));
    assert!(holds("agent.attributes.tier", "not_in", json!(["silver"])));
    assert!(holds("agent.attributes.tier", "exists", json!(true)));
    assert!(
        holds("agent.attributes.nothing", "exists", json!(false)),
        "null is absent"
    );
    assert!(holds("agent.attributes.missing", "exists", json!(false)));
    // A value of another type than the operator takes is false, never an error.
    assert!(!holds("agent.attributes.tier", "gt", json!(1)));
    assert!(!holds("agent.attributes.level", "starts_with", json!("3")));
}

#[test]
fn a_missing_value_fails_every_test_but_exists_and_not_turns_that_around() {
    let mut anonymous = request();
    anonymous.principal = None;
    anonymous.resource = None;
    for (attr, op, value) in [
        ("principal.id", "eq", json!(principal_id().to_string())),
        ("principal.id", "ne", json!(agent_id().to_string())),
        ("principal.attributes.department", "ne", json!("sales")),
        (
            "principal.attributes.department",
            "not_in",
            json!(["sales"]),
        ),
        ("request.resource", "ne", json!("x")),
        ("task.parent_id", "starts_with", json!("")),
    ] {
        assert!(!holds_for(attr, op, value, &anonymous), "{attr} {op}");
    }
    assert!(holds_for(
        "principal.id",
        "exists",
        json!(false),
        &anonymous
    ));
    let spec = parse(json!({"name": "r", "effect": "deny", "when":
        {"not": {"attr": "principal.attributes.department", "op": "eq", "value": "finance"}}}))
    .unwrap();
    let set = RuleSet::new([AccessRule::new(AccountId::random(), spec, anonymous.now)]);
    assert!(!set.decide(&anonymous).allowed, "no principal: not finance");
}

fn rule(value: Value) -> AccessRule {
    AccessRule::new(
        AccountId::random(),
        parse(value).unwrap(),
        wednesday_afternoon(),
    )
}

fn names(set: &BTreeSet<String>) -> Vec<&str> {
    set.iter().map(String::as_str).collect()
}

#[test]
fn no_rule_matching_grants_the_request_as_asked() {
    let set = RuleSet::new([rule(json!({"name": "never", "effect": "deny",
        "when": {"attr": "agent.name", "op": "eq", "value": "someone else"}}))]);
    let decision = set.decide(&request());
    assert!(decision.allowed);
    assert_eq!(decision.reason, Reason::NoRuleMatched);
    assert_eq!(decision.decided_by, None);
    assert_eq!(decision.scopes, request().scopes);
    assert_eq!(decision.trace.len(), 1);
    assert_eq!(decision.trace[0].step, Step::NotMatched);
    let empty = RuleSet::default().decide(&request());
    assert!(empty.allowed && empty.trace.is_empty());
}

#[test]
fn rules_are_read_by_priority_then_name_and_the_first_allow_or_deny_decides() {
    let deny = rule(json!({"name": "b-deny", "priority": 10, "effect": "deny"}));
    let allow = rule(json!({"name": "a-allow", "priority": 10, "effect": "allow"}));
    let narrow = rule(json!({"name": "narrow", "priority": 1, "effect": "narrow",
        "scopes": ["reports.read", "mail.send"]}));
    let late = rule(json!({"name": "late", "priority": 50, "effect": "deny"}));
    let set = RuleSet::new([late, deny, allow.clone(), narrow]);
    let decision = set.decide(&request());
    assert!(decision.allowed);
    assert_eq!(decision.reason, Reason::Allowed);
    assert_eq!(decision.decided_by.as_ref().unwrap().id, allow.id);
    assert_eq!(
        names(&decision.scopes),
        ["mail.send", "reports.read"],
        "narrowed before the allow"
    );
    let steps: Vec<(&str, Step)> = decision
        .trace
        .iter()
        .map(|t| (&*t.rule.name, t.step))
        .collect();
    assert_eq!(
        steps,
        [
            ("narrow", Step::Matched),
            ("a-allow", Step::Matched),
            ("b-deny", Step::NotReached),
            ("late", Step::NotReached)
        ]
    );
    assert_eq!(names(&decision.trace[0].removed), ["reports.export"]);
}

#[test]
fn a_matching_deny_denies_with_no_scope_and_names_itself() {
    let deny = rule(
        json!({"name": "no exports at 2pm", "effect": "deny", "when": {"all": [
        {"attr": "request.scopes", "op": "contains", "value": "reports.export"},
        {"attr": "time.hour", "op": "eq", "value": 14}]}}),
    );
    let decision = RuleSet::new([deny.clone()]).decide(&request());
    assert!(!decision.allowed);
    assert_eq!(decision.reason, Reason::Denied);
    assert!(decision.scopes.is_empty());
    let by = decision.decided_by.unwrap();
    assert_eq!((by.id, &*by.name), (deny.id, "no exports at 2pm"));
}

#[test]
fn narrow_rules_intersect_in_turn_and_the_one_that_empties_the_scopes_denies() {
    let first = rule(json!({"name": "first", "priority": 1, "effect": "narrow",
        "scopes": ["reports.read", "reports.export"]}));
    let second = rule(json!({"name": "second", "priority": 2, "effect": "narrow",
        "scopes": ["reports.read", "other"]}));
    let decision = RuleSet::new([first.clone(), second.clone()]).decide(&request());
    assert!(decision.allowed);
    assert_eq!(decision.reason, Reason::Narrowed);
    assert_eq!(names(&decision.scopes), ["reports.read"]);
    assert_eq!(
        decision.decided_by.unwrap().id,
        second.id,
        "the last narrowing"
    );

    let emptying = rule(
        json!({"name": "emptying", "priority": 3, "effect": "narrow",
        "scopes": ["unrelated"]}),
    );
    let after = rule(json!({"name": "after", "priority": 4, "effect": "allow"}));
    let decision = RuleSet::new([first, second, emptying.clone(), after]).decide(&request());
    assert!(!decision.allowed);
    assert_eq!(decision.reason, Reason::NarrowedToNothing);
    assert!(decision.scopes.is_empty());
    assert_eq!(decision.decided_by.unwrap().id, emptying.id);
    assert_eq!(names(&decision.trace[2].removed), ["reports.read"]);
    assert_eq!(decision.trace[3].step, Step::NotReached);
}

#[test]
fn disabled_rules_are_never_evaluated() {
    let off = rule(json!({"name": "off", "effect": "deny", "enabled": false}));
    let decision = RuleSet::new([off]).decide(&request());
    assert!(decision.allowed);
    assert!(decision.trace.is_empty());
}
