//! The condition language of access rules: `all`/`any`/`not` of tests
//! `{"attr": <path>, "op": <op>, "value": <json>}`, parsed from JSON once, typed against the
//! attribute each test reads, and evaluated without allocating.
//!
//! Every mistake is found while parsing and named by the JSON pointer of the node that
//! holds it (`/when/all/1/op`), so a rule that is stored always evaluates.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc, Weekday};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::RuleError;
use super::decision::Facts;

/// The bounds of a condition tree.
pub mod limits {
    /// Levels of `all`/`any`/`not` and tests (a lone test is one level).
    pub const DEPTH: usize = 8;
    /// Nodes of one tree (`all`, `any`, `not` and tests).
    pub const NODES: usize = 100;
    /// Items of a list value (`in`, `not_in`, `contains_any`, `contains_all`).
    pub const LIST_ITEMS: usize = 100;
    /// Characters of a text value.
    pub const TEXT_CHARS: usize = 1_024;
    /// Characters of a `matches` pattern.
    pub const PATTERN_CHARS: usize = 256;
    /// Bytes the compiled program of a `matches` pattern may take.
    pub const PATTERN_PROGRAM_BYTES: usize = 256 * 1024;
    /// Characters of an attribute key (`principal.attributes.<key>`).
    pub const KEY_CHARS: usize = 64;
}

/// What a test reads from the access request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attr {
    AgentId,
    AgentName,
    AgentAttribute(String),
    PrincipalId,
    PrincipalAttribute(String),
    Scopes,
    Tools,
    Resource,
    GrantType,
    TaskId,
    ParentTaskId,
    Hour,
    Weekday,
    Now,
}

/// Every path a test may name (attributes as `<prefix><key>`).
pub const PATHS: &str = "agent.id, agent.name, agent.attributes.<key>, principal.id, \
     principal.attributes.<key>, request.scopes, request.tools, request.resource, \
     request.grant_type, task.id, task.parent_id, time.hour, time.weekday, time.now";

/// The type of what an attribute holds, which decides the operators it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A uuid (`agent.id`, `principal.id`).
    Id,
    Text,
    /// A set of texts (`request.scopes`, `request.tools`).
    Set,
    /// 0 to 23.
    Hour,
    Weekday,
    /// An instant.
    Time,
    /// Any JSON value (attributes): its type is known only at evaluation; a test whose
    /// operator does not fit the value found is false.
    Json,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Id => "an id (uuid)",
            Kind::Text => "text",
            Kind::Set => "a set of texts",
            Kind::Hour => "an hour (0 to 23)",
            Kind::Weekday => "a weekday (mon to sun)",
            Kind::Time => "an instant (RFC 3339)",
            Kind::Json => "any JSON value",
        }
    }

    fn ops(self) -> &'static [Op] {
        use Op::*;
        match self {
            Kind::Id => &[Eq, Ne, In, NotIn, Exists],
            Kind::Text => &[
                Eq, Ne, In, NotIn, Contains, StartsWith, EndsWith, Matches, Exists,
            ],
            Kind::Set => &[Contains, ContainsAny, ContainsAll, Exists],
            Kind::Hour => &[Eq, Ne, In, NotIn, Gt, Gte, Lt, Lte],
            Kind::Weekday => &[Eq, Ne, In, NotIn],
            Kind::Time => &[Gt, Gte, Lt, Lte],
            Kind::Json => &[
                Eq,
                Ne,
                In,
                NotIn,
                Contains,
                ContainsAny,
                ContainsAll,
                Gt,
                Gte,
                Lt,
                Lte,
                StartsWith,
                EndsWith,
                Matches,
                Exists,
            ],
        }
    }
}

impl Attr {
    fn parse(path: &str) -> Option<Self> {
        let key = |rest: &str| {
            let chars = rest.chars().count();
            (chars > 0 && chars <= limits::KEY_CHARS && !rest.chars().any(char::is_control))
                .then(|| rest.to_owned())
        };
        if let Some(rest) = path.strip_prefix("agent.attributes.") {
            return key(rest).map(Attr::AgentAttribute);
        }
        if let Some(rest) = path.strip_prefix("principal.attributes.") {
            return key(rest).map(Attr::PrincipalAttribute);
        }
        Some(match path {
            "agent.id" => Attr::AgentId,
            "agent.name" => Attr::AgentName,
            "principal.id" => Attr::PrincipalId,
            "request.scopes" => Attr::Scopes,
            "request.tools" => Attr::Tools,
            "request.resource" => Attr::Resource,
            "request.grant_type" => Attr::GrantType,
            "task.id" => Attr::TaskId,
            "task.parent_id" => Attr::ParentTaskId,
            "time.hour" => Attr::Hour,
            "time.weekday" => Attr::Weekday,
            "time.now" => Attr::Now,
            _ => return None,
        })
    }

    /// The path as written in rules.
    pub fn path(&self) -> String {
        match self {
            Attr::AgentAttribute(key) => format!("agent.attributes.{key}"),
            Attr::PrincipalAttribute(key) => format!("principal.attributes.{key}"),
            Attr::AgentId => "agent.id".into(),
            Attr::AgentName => "agent.name".into(),
            Attr::PrincipalId => "principal.id".into(),
            Attr::Scopes => "request.scopes".into(),
            Attr::Tools => "request.tools".into(),
            Attr::Resource => "request.resource".into(),
            Attr::GrantType => "request.grant_type".into(),
            Attr::TaskId => "task.id".into(),
            Attr::ParentTaskId => "task.parent_id".into(),
            Attr::Hour => "time.hour".into(),
            Attr::Weekday => "time.weekday".into(),
            Attr::Now => "time.now".into(),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Attr::AgentId | Attr::PrincipalId => Kind::Id,
            Attr::AgentName
            | Attr::Resource
            | Attr::GrantType
            | Attr::TaskId
            | Attr::ParentTaskId => Kind::Text,
            Attr::AgentAttribute(_) | Attr::PrincipalAttribute(_) => Kind::Json,
            Attr::Scopes | Attr::Tools => Kind::Set,
            Attr::Hour => Kind::Hour,
            Attr::Weekday => Kind::Weekday,
            Attr::Now => Kind::Time,
        }
    }
}

d2_kernel::named_values! {
    /// A test's operator.
    pub enum Op (unknown: UnknownOp) {
        Eq = "eq",
        Ne = "ne",
        /// The attribute is one of the listed values.
        In = "in",
        NotIn = "not_in",
        /// A set or JSON array holds the value; a text holds it as a substring.
        Contains = "contains",
        /// A set or JSON array holds at least one of the listed values.
        ContainsAny = "contains_any",
        /// A set or JSON array holds every listed value.
        ContainsAll = "contains_all",
        /// The attribute is present (`value: true`, the default) or absent (`false`); a set
        /// is present when it is not empty.
        Exists = "exists",
        Gt = "gt",
        Gte = "gte",
        Lt = "lt",
        Lte = "lte",
        StartsWith = "starts_with",
        EndsWith = "ends_with",
        /// A regular expression (RE2 syntax of the `regex` crate: linear time, no
        /// backtracking) found anywhere in the text; anchor it with `^...$` for a whole match.
        Matches = "matches",
    }
}

/// An `op` that is none of the operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown op `{0}`")]
pub struct UnknownOp(pub String);

/// A compiled `matches` pattern, compared by its text.
#[derive(Clone, Debug)]
pub struct Pattern(regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A test's value, typed for its attribute and operator.
#[derive(Clone, Debug, PartialEq)]
enum Operand {
    Flag(bool),
    Id(Uuid),
    Ids(BTreeSet<Uuid>),
    Text(String),
    Texts(BTreeSet<String>),
    Hour(u32),
    Hours(BTreeSet<u32>),
    Day(Weekday),
    Days(Vec<Weekday>),
    Time(DateTime<Utc>),
    Number(f64),
    Json(Value),
    Jsons(Vec<Value>),
    Pattern(Pattern),
}

/// One test of an attribute.
#[derive(Clone, Debug)]
pub struct Test {
    attr: Attr,
    op: Op,
    /// As written (for storage and display); `None` for `exists` without a value.
    value: Option<Value>,
    operand: Operand,
}

impl PartialEq for Test {
    fn eq(&self, other: &Self) -> bool {
        self.attr == other.attr && self.op == other.op && self.value == other.value
    }
}

impl Test {
    pub fn attr(&self) -> &Attr {
        &self.attr
    }

    pub fn op(&self) -> Op {
        self.op
    }
}

/// A validated condition tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Test(Test),
}

/// A JSON pointer being built (RFC 6901: `~` and `/` escaped in member names).
#[derive(Clone, Debug)]
pub(crate) struct Pointer(String);

impl Pointer {
    pub(crate) fn root(at: &str) -> Self {
        Self(at.to_owned())
    }

    pub(crate) fn member(&self, name: &str) -> Self {
        let escaped = name.replace('~', "~0").replace('/', "~1");
        Self(format!("{}/{escaped}", self.0))
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        Self(format!("{}/{index}", self.0))
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> RuleError {
        RuleError {
            pointer: self.0.clone(),
            message: message.into(),
        }
    }
}

/// How much of the tree's budget parsing has spent.
struct Budget {
    nodes: usize,
}

impl Condition {
    /// The condition `value` describes, found at `at` (a JSON pointer) in its document.
    pub fn parse(value: &Value, at: &str) -> Result<Self, RuleError> {
        let mut budget = Budget { nodes: 0 };
        parse_node(value, &Pointer::root(at), 1, &mut budget)
    }

    /// The condition as JSON, in the form [`Condition::parse`] reads.
    pub fn to_json(&self) -> Value {
        match self {
            Condition::All(items) => {
                serde_json::json!({ "all": items.iter().map(Condition::to_json).collect::<Vec<_>>() })
            }
            Condition::Any(items) => {
                serde_json::json!({ "any": items.iter().map(Condition::to_json).collect::<Vec<_>>() })
            }
            Condition::Not(item) => serde_json::json!({ "not": item.to_json() }),
            Condition::Test(test) => {
                let mut object = Map::new();
                object.insert("attr".into(), Value::String(test.attr.path()));
                object.insert("op".into(), Value::String(test.op.as_str().to_owned()));
                if let Some(value) = &test.value {
                    object.insert("value".into(), value.clone());
                }
                Value::Object(object)
            }
        }
    }

    /// Whether the request's facts satisfy the condition.
    pub(crate) fn holds(&self, facts: &Facts<'_>) -> bool {
        match self {
            Condition::All(items) => items.iter().all(|item| item.holds(facts)),
            Condition::Any(items) => items.iter().any(|item| item.holds(facts)),
            Condition::Not(item) => !item.holds(facts),
            Condition::Test(test) => test.holds(facts),
        }
    }
}

const SHAPES: &str = "a condition is an object: {\"all\": [...]}, {\"any\": [...]}, \
     {\"not\": {...}} or {\"attr\": ..., \"op\": ..., \"value\": ...}";

fn parse_node(
    value: &Value,
    at: &Pointer,
    depth: usize,
    budget: &mut Budget,
) -> Result<Condition, RuleError> {
    if depth > limits::DEPTH {
        return Err(at.error(format!(
            "conditions nest at most {} levels deep",
            limits::DEPTH
        )));
    }
    budget.nodes = budget.nodes.saturating_add(1);
    if budget.nodes > limits::NODES {
        return Err(at.error(format!(
            "a rule holds at most {} conditions (all, any, not and tests)",
            limits::NODES
        )));
    }
    let Value::Object(object) = value else {
        return Err(at.error(SHAPES));
    };
    for combinator in ["all", "any", "not"] {
        if let Some(inner) = object.get(combinator) {
            if let Some(other) = object.keys().find(|key| key.as_str() != combinator) {
                return Err(at.member(other).error(format!(
                    "`{combinator}` stands alone in its object: move `{other}` into a condition of its own"
                )));
            }
            let at = at.member(combinator);
            let next = depth.saturating_add(1);
            if combinator == "not" {
                return Ok(Condition::Not(Box::new(parse_node(
                    inner, &at, next, budget,
                )?)));
            }
            let Value::Array(items) = inner else {
                return Err(at.error(format!("`{combinator}` takes a list of conditions")));
            };
            if items.is_empty() {
                return Err(at.error(format!("`{combinator}` needs at least one condition")));
            }
            let items = items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_node(item, &at.index(i), next, budget))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if combinator == "all" {
                Condition::All(items)
            } else {
                Condition::Any(items)
            });
        }
    }
    parse_test(object, at).map(Condition::Test)
}

fn parse_test(object: &Map<String, Value>, at: &Pointer) -> Result<Test, RuleError> {
    if let Some(other) = object
        .keys()
        .find(|key| !matches!(key.as_str(), "attr" | "op" | "value"))
    {
        return Err(at.member(other).error(format!(
            "unknown member `{}`: {SHAPES}",
            other.escape_debug()
        )));
    }
    let attr_at = at.member("attr");
    let path = match object.get("attr") {
        Some(Value::String(path)) => path,
        Some(_) => return Err(attr_at.error("`attr` is a text: the path of an attribute")),
        None => return Err(at.error(format!("a test needs `attr`: {SHAPES}"))),
    };
    let attr = Attr::parse(path).ok_or_else(|| {
        attr_at.error(format!(
            "unknown attribute `{}`: use one of {PATHS} (keys of 1 to {} characters)",
            path.escape_debug(),
            limits::KEY_CHARS
        ))
    })?;
    let op_at = at.member("op");
    let op: Op = match object.get("op") {
        Some(Value::String(op)) => op.parse().map_err(|_| {
            op_at.error(format!(
                "unknown op `{}`: use one of {}",
                op.escape_debug(),
                Op::ALL.map(Op::as_str).join(", ")
            ))
        })?,
        Some(_) => return Err(op_at.error("`op` is a text, such as \"eq\"")),
        None => return Err(at.error("a test needs `op`")),
    };
    let kind = attr.kind();
    if !kind.ops().contains(&op) {
        return Err(op_at.error(format!(
            "`{}` is {}: `{op}` does not apply to it; use one of {}",
            attr.path(),
            kind.describe(),
            kind.ops()
                .iter()
                .map(|op| op.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let value_at = at.member("value");
    let value = object.get("value");
    let operand = match (op, value) {
        (Op::Exists, None) => Operand::Flag(true),
        (Op::Exists, Some(Value::Bool(flag))) => Operand::Flag(*flag),
        (Op::Exists, Some(_)) => {
            return Err(value_at.error("`exists` takes `true` (present) or `false` (absent)"));
        }
        (_, None) => return Err(at.error(format!("`{op}` needs a `value`"))),
        (_, Some(value)) => operand(kind, op, value, &value_at, &attr)?,
    };
    Ok(Test {
        attr,
        op,
        value: value.cloned(),
        operand,
    })
}

/// The typed value of a test of `kind` with `op`.
fn operand(
    kind: Kind,
    op: Op,
    value: &Value,
    at: &Pointer,
    attr: &Attr,
) -> Result<Operand, RuleError> {
    let mismatch = |wanted: &str| {
        at.error(format!(
            "`{}` is {}: `{op}` compares it with {wanted}",
            attr.path(),
            kind.describe()
        ))
    };
    let is_list = matches!(op, Op::In | Op::NotIn | Op::ContainsAny | Op::ContainsAll);
    if is_list {
        let Value::Array(items) = value else {
            return Err(mismatch("a list"));
        };
        if items.is_empty() || items.len() > limits::LIST_ITEMS {
            return Err(at.error(format!(
                "`{op}` takes a list of 1 to {} values",
                limits::LIST_ITEMS
            )));
        }
        let item = |i: usize, item: &Value| scalar(kind, op, item, &at.index(i), attr);
        let mut typed = Vec::with_capacity(items.len());
        for (i, value) in items.iter().enumerate() {
            typed.push(item(i, value)?);
        }
        return Ok(match kind {
            Kind::Id => Operand::Ids(
                typed
                    .into_iter()
                    .filter_map(|o| match o {
                        Operand::Id(id) => Some(id),
                        _ => None,
                    })
                    .collect(),
            ),
            Kind::Text | Kind::Set => Operand::Texts(
                typed
                    .into_iter()
                    .filter_map(|o| match o {
                        Operand::Text(text) => Some(text),
                        _ => None,
                    })
                    .collect(),
            ),
            Kind::Hour => Operand::Hours(
                typed
                    .into_iter()
                    .filter_map(|o| match o {
                        Operand::Hour(hour) => Some(hour),
                        _ => None,
                    })
                    .collect(),
            ),
            Kind::Weekday => Operand::Days(
                typed
                    .into_iter()
                    .filter_map(|o| match o {
                        Operand::Day(day) => Some(day),
                        _ => None,
                    })
                    .collect(),
            ),
            Kind::Json => Operand::Jsons(items.clone()),
            Kind::Time => return Err(mismatch("an instant")),
        });
    }
    scalar(kind, op, value, at, attr)
}

/// One value of a test (or of its list) of `kind` with `op`.
fn scalar(
    kind: Kind,
    op: Op,
    value: &Value,
    at: &Pointer,
    attr: &Attr,
) -> Result<Operand, RuleError> {
    let mismatch = |wanted: &str| {
        at.error(format!(
            "`{}` is {}: `{op}` compares it with {wanted}",
            attr.path(),
            kind.describe()
        ))
    };
    let text = |value: &Value| -> Result<String, RuleError> {
        let Value::String(text) = value else {
            return Err(mismatch("a text"));
        };
        if text.chars().count() > limits::TEXT_CHARS {
            return Err(at.error(format!(
                "a text value is at most {} characters",
                limits::TEXT_CHARS
            )));
        }
        Ok(text.clone())
    };
    match (kind, op) {
        (_, Op::Matches) => pattern(value, at, &mismatch),
        (Kind::Id, _) => {
            let text = text(value)?;
            text.parse::<Uuid>()
                .map(Operand::Id)
                .map_err(|_| mismatch("an id (uuid)"))
        }
        (Kind::Text | Kind::Set, _) => text(value).map(Operand::Text),
        (Kind::Hour, _) => value
            .as_u64()
            .filter(|hour| *hour <= 23)
            .and_then(|hour| u32::try_from(hour).ok())
            .map(Operand::Hour)
            .ok_or_else(|| mismatch("a whole hour from 0 to 23")),
        (Kind::Weekday, _) => value
            .as_str()
            .and_then(weekday)
            .map(Operand::Day)
            .ok_or_else(|| mismatch("a weekday: mon, tue, wed, thu, fri, sat or sun")),
        (Kind::Time, _) => value
            .as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|at| Operand::Time(at.with_timezone(&Utc)))
            .ok_or_else(|| mismatch("an RFC 3339 instant such as \"2026-12-01T00:00:00Z\"")),
        (Kind::Json, Op::Gt | Op::Gte | Op::Lt | Op::Lte) => value
            .as_f64()
            .map(Operand::Number)
            .ok_or_else(|| mismatch("a number")),
        (Kind::Json, Op::StartsWith | Op::EndsWith) => text(value).map(Operand::Text),
        (Kind::Json, _) => {
            if let Value::String(_) = value {
                text(value)?;
            }
            if matches!(value, Value::Object(_) | Value::Array(_)) && op != Op::Eq && op != Op::Ne {
                return Err(mismatch("a text, a number, a boolean or null"));
            }
            Ok(Operand::Json(value.clone()))
        }
    }
}

fn pattern(
    value: &Value,
    at: &Pointer,
    mismatch: &dyn Fn(&str) -> RuleError,
) -> Result<Operand, RuleError> {
    let Value::String(source) = value else {
        return Err(mismatch("a regular expression (a text)"));
    };
    if source.chars().count() > limits::PATTERN_CHARS {
        return Err(at.error(format!(
            "a pattern is at most {} characters",
            limits::PATTERN_CHARS
        )));
    }
    regex::RegexBuilder::new(source)
        .size_limit(limits::PATTERN_PROGRAM_BYTES)
        .dfa_size_limit(limits::PATTERN_PROGRAM_BYTES)
        .build()
        .map(|regex| Operand::Pattern(Pattern(regex)))
        .map_err(|error| {
            let reason = match error {
                regex::Error::CompiledTooBig(_) => "it compiles to too large a program".to_owned(),
                other => other
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_owned(),
            };
            at.error(format!("not a valid pattern: {reason}"))
        })
}

fn weekday(text: &str) -> Option<Weekday> {
    Some(match text {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

/// What an attribute holds in one request.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fact<'a> {
    Missing,
    Id(Uuid),
    Text(&'a str),
    Set(&'a BTreeSet<String>),
    Hour(u32),
    Day(Weekday),
    Time(DateTime<Utc>),
    Json(&'a Value),
}

impl Test {
    fn holds(&self, facts: &Facts<'_>) -> bool {
        let fact = facts.get(&self.attr);
        if let Operand::Flag(present) = self.operand {
            let is_present = match fact {
                Fact::Missing | Fact::Json(Value::Null) => false,
                Fact::Set(set) => !set.is_empty(),
                _ => true,
            };
            return is_present == present;
        }
        compare(fact, self.op, &self.operand)
    }
}

/// A test of a present value; every combination the parser does not produce, and every
/// JSON value of another type than the operator takes, is false.
fn compare(fact: Fact<'_>, op: Op, operand: &Operand) -> bool {
    use Operand as O;
    match (fact, operand) {
        (Fact::Missing, _) => false,
        (Fact::Id(id), O::Id(wanted)) => match op {
            Op::Eq => id == *wanted,
            Op::Ne => id != *wanted,
            _ => false,
        },
        (Fact::Id(id), O::Ids(wanted)) => (op == Op::In) == wanted.contains(&id),
        (Fact::Text(text), operand) => text_test(text, op, operand),
        (Fact::Set(set), O::Text(wanted)) => op == Op::Contains && set.contains(wanted),
        (Fact::Set(set), O::Texts(wanted)) => match op {
            Op::ContainsAny => wanted.iter().any(|w| set.contains(w)),
            Op::ContainsAll => wanted.iter().all(|w| set.contains(w)),
            _ => false,
        },
        (Fact::Hour(hour), O::Hour(wanted)) => ordered(hour.cmp(wanted), op),
        (Fact::Hour(hour), O::Hours(wanted)) => (op == Op::In) == wanted.contains(&hour),
        (Fact::Day(day), O::Day(wanted)) => match op {
            Op::Eq => day == *wanted,
            Op::Ne => day != *wanted,
            _ => false,
        },
        (Fact::Day(day), O::Days(wanted)) => (op == Op::In) == wanted.contains(&day),
        (Fact::Time(now), O::Time(wanted)) => ordered(now.cmp(wanted), op),
        (Fact::Json(value), operand) => json_test(value, op, operand),
        _ => false,
    }
}

fn ordered(order: std::cmp::Ordering, op: Op) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => order == Equal,
        Op::Ne => order != Equal,
        Op::Gt => order == Greater,
        Op::Gte => order != Less,
        Op::Lt => order == Less,
        Op::Lte => order != Greater,
        _ => false,
    }
}

fn text_test(text: &str, op: Op, operand: &Operand) -> bool {
    match (op, operand) {
        (Op::Eq, Operand::Text(wanted)) => text == wanted,
        (Op::Ne, Operand::Text(wanted)) => text != wanted,
        (Op::In, Operand::Texts(wanted)) => wanted.contains(text),
        (Op::NotIn, Operand::Texts(wanted)) => !wanted.contains(text),
        (Op::Contains, Operand::Text(wanted)) => text.contains(wanted.as_str()),
        (Op::StartsWith, Operand::Text(wanted)) => text.starts_with(wanted.as_str()),
        (Op::EndsWith, Operand::Text(wanted)) => text.ends_with(wanted.as_str()),
        (Op::Matches, Operand::Pattern(pattern)) => pattern.0.is_match(text),
        _ => false,
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn json_test(value: &Value, op: Op, operand: &Operand) -> bool {
    match (op, operand) {
        (Op::Eq, Operand::Json(wanted)) => json_eq(value, wanted),
        (Op::Ne, Operand::Json(wanted)) => !json_eq(value, wanted),
        (Op::In, Operand::Jsons(wanted)) => wanted.iter().any(|w| json_eq(value, w)),
        (Op::NotIn, Operand::Jsons(wanted)) => !wanted.iter().any(|w| json_eq(value, w)),
        (Op::Contains, Operand::Json(wanted)) => match value {
            Value::Array(items) => items.iter().any(|item| json_eq(item, wanted)),
            Value::String(text) => wanted.as_str().is_some_and(|w| text.contains(w)),
            _ => false,
        },
        (Op::ContainsAny, Operand::Jsons(wanted)) => value
            .as_array()
            .is_some_and(|items| wanted.iter().any(|w| items.iter().any(|i| json_eq(i, w)))),
        (Op::ContainsAll, Operand::Jsons(wanted)) => value
            .as_array()
            .is_some_and(|items| wanted.iter().all(|w| items.iter().any(|i| json_eq(i, w)))),
        (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Operand::Number(wanted)) => value
            .as_f64()
            .and_then(|number| number.partial_cmp(wanted))
            .is_some_and(|order| ordered(order, op)),
        (Op::StartsWith | Op::EndsWith | Op::Matches, _) => value
            .as_str()
            .is_some_and(|text| text_test(text, op, operand)),
        _ => false,
    }
}
