//! `POST /searches/deployments` filter rules (6.0+): label rules (`any_of`, `not_any_of`,
//! `is_null`, `is_not_null`, `is_not`) and attribute rules, validated as
//! `manager_rest/rest/filters_utils.py` does and applied as `storage/filters.py` does.

use serde_json::Value;

use super::error::SimError;
use super::state::Deployment;

const LABEL_OPERATORS: &[&str] = &["any_of", "not_any_of", "is_null", "is_not_null", "is_not"];
const ATTR_OPERATORS: &[&str] = &[
    "any_of",
    "not_any_of",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "is_not_empty",
];
const DEPLOYMENT_ATTRS: &[&str] = &[
    "id",
    "blueprint_id",
    "created_by",
    "site_name",
    "schedules",
    "tenant_name",
    "display_name",
    "installation_status",
];

/// One validated filter rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FilterRule {
    key: String,
    values: Vec<String>,
    operator: String,
    is_label: bool,
}

fn bad(rule: &Value, reason: impl Into<String>) -> SimError {
    SimError::InvalidFilterRule {
        rule: rule.clone(),
        reason: reason.into(),
    }
}

/// Parses the `filter_rules` of a search body: a list of rules, each validated as the manager
/// does; a rule given twice counts once.
pub(crate) fn parse_rules(raw: &Value) -> Result<Vec<FilterRule>, SimError> {
    let Value::Array(items) = raw else {
        return Err(SimError::BadParameters(
            "filter_rules must be a list".into(),
        ));
    };
    let mut rules = Vec::new();
    for rule in items {
        let parsed = parse_rule(rule)?;
        if !rules.contains(&parsed) {
            rules.push(parsed);
        }
    }
    Ok(rules)
}

/// One rule: exactly the keys `key`, `values`, `operator` and `type`; the key lower-cased,
/// non-string values stringified; then the checks of its type.
fn parse_rule(rule: &Value) -> Result<FilterRule, SimError> {
    let Value::Object(obj) = rule else {
        return Err(bad(rule, "The filter rule is not a dictionary"));
    };
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["key", "operator", "type", "values"] {
        return Err(bad(
            rule,
            "At least one of the entries in the filter rule is missing",
        ));
    }
    let key = obj
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(rule, "The filter rule key must be a string"))?
        .to_lowercase();
    let values: Vec<String> = match obj.get("values") {
        Some(Value::Array(vs)) => vs
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => return Err(bad(rule, "The filter rule values must be a list")),
    };
    let operator = obj
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let is_label = match obj.get("type").and_then(Value::as_str) {
        Some("label") => true,
        Some("attribute") => false,
        _ => {
            return Err(bad(
                rule,
                "Filter rule type must be one of label, attribute",
            ));
        }
    };
    if is_label {
        check_label_rule(rule, &operator, &values)?;
    } else {
        check_attribute_rule(rule, &key, &operator, &values)?;
    }
    Ok(FilterRule {
        key,
        values,
        operator,
        is_label,
    })
}

/// A label rule: one of [`LABEL_OPERATORS`]; `is_null`/`is_not_null` take no values, the
/// others at least one.
fn check_label_rule(rule: &Value, operator: &str, values: &[String]) -> Result<(), SimError> {
    if !LABEL_OPERATORS.contains(&operator) {
        return Err(bad(
            rule,
            format!(
                "The operator for filtering by labels must be one of {}",
                LABEL_OPERATORS.join(", ")
            ),
        ));
    }
    let null_op = operator == "is_null" || operator == "is_not_null";
    if null_op && !values.is_empty() {
        return Err(bad(
            rule,
            "Values list must be empty if the operator is one of is_null, is_not_null",
        ));
    }
    if !null_op && values.is_empty() {
        return Err(bad(
            rule,
            "Values list must include at least one item if the operator is one of \
             any_of, not_any_of, is_not",
        ));
    }
    Ok(())
}

/// An attribute rule: one of [`ATTR_OPERATORS`] (`is_not_empty` takes no values) on one of
/// the [`DEPLOYMENT_ATTRS`].
fn check_attribute_rule(
    rule: &Value,
    key: &str,
    operator: &str,
    values: &[String],
) -> Result<(), SimError> {
    if !ATTR_OPERATORS.contains(&operator) {
        return Err(bad(
            rule,
            format!(
                "The operator for filtering by attributes must be one of {}",
                ATTR_OPERATORS.join(", ")
            ),
        ));
    }
    if operator == "is_not_empty" && !values.is_empty() {
        return Err(bad(
            rule,
            "Values list must be empty if the operator is is_not_empty",
        ));
    }
    if !DEPLOYMENT_ATTRS.contains(&key) {
        return Err(bad(
            rule,
            format!(
                "Allowed attributes to filter deployments by are {}",
                DEPLOYMENT_ATTRS.join(", ")
            ),
        ));
    }
    Ok(())
}

fn attribute<'a>(d: &'a Deployment, key: &str) -> Option<&'a str> {
    match key {
        "id" | "display_name" => Some(&d.id),
        "blueprint_id" => Some(&d.blueprint_id),
        "created_by" => Some(&d.created_by),
        "tenant_name" => Some(&d.tenant),
        "installation_status" => Some("active"),
        _ => None, // site_name, schedules: never set in the simulator
    }
}

impl FilterRule {
    /// Whether the deployment passes this rule.
    pub fn accepts(&self, d: &Deployment) -> bool {
        let values = &self.values;
        if self.is_label {
            let with_key = || d.labels.iter().filter(|(k, _)| *k == self.key);
            return match self.operator.as_str() {
                "any_of" => with_key().any(|(_, v)| values.contains(v)),
                // The key is present with some value outside the list.
                "not_any_of" => with_key().any(|(_, v)| !values.contains(v)),
                "is_null" => with_key().next().is_none(),
                "is_not_null" => with_key().next().is_some(),
                // No label key=value with a listed value (absent key passes).
                "is_not" => !with_key().any(|(_, v)| values.contains(v)),
                _ => false,
            };
        }
        let attr = attribute(d, &self.key);
        let lower = |s: &str| s.to_lowercase();
        match (self.operator.as_str(), attr) {
            ("any_of", Some(a)) => values.iter().any(|v| v == a),
            ("not_any_of", Some(a)) => !values.iter().any(|v| v == a),
            ("contains", Some(a)) => values.iter().any(|v| a.contains(v.as_str())),
            ("not_contains", Some(a)) => values.iter().all(|v| !a.contains(v.as_str())),
            ("starts_with", Some(a)) => values.iter().any(|v| lower(a).starts_with(&lower(v))),
            ("ends_with", Some(a)) => values.iter().any(|v| lower(a).ends_with(&lower(v))),
            ("is_not_empty", Some(a)) => !a.is_empty(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn dep(id: &str, labels: &[(&str, &str)]) -> Deployment {
        Deployment {
            tenant: Arc::from("default_tenant"),
            id: Arc::from(id),
            blueprint_id: id.into(),
            created_at: String::new(),
            created_by: "admin".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            groups: vec![],
            modification: None,
            executions: vec![],
            life: Default::default(),
        }
    }

    fn ids(rules: Value) -> Vec<&'static str> {
        let rules = parse_rules(&rules).expect("valid rules");
        let deps = [
            ("d1", dep("d1", &[("zxc", "1"), ("abc", "1")])),
            ("d2", dep("d2", &[])),
            ("d3", dep("d3", &[("zxc", "2")])),
        ];
        deps.iter()
            .filter(|(_, d)| rules.iter().all(|r| r.accepts(d)))
            .map(|(id, _)| *id)
            .collect()
    }

    fn rule(key: &str, values: &[&str], op: &str) -> Value {
        json!([{"key": key, "values": values, "operator": op, "type": "label"}])
    }

    #[test]
    fn label_operators_match_the_manager() {
        assert_eq!(ids(rule("zxc", &["1"], "any_of")), ["d1"]);
        assert_eq!(ids(rule("zxc", &["1"], "not_any_of")), ["d3"]);
        assert_eq!(ids(rule("zxc", &["1"], "is_not")), ["d2", "d3"]);
        assert_eq!(ids(rule("zxc", &[], "is_null")), ["d2"]);
        assert_eq!(ids(rule("ZXC", &[], "is_not_null")), ["d1", "d3"]);
    }

    #[test]
    fn malformed_rules_are_invalid_filter_rules() {
        for raw in [
            json!([{"key": "a", "values": ["b"], "operator": "any_of"}]),
            json!([{"key": "a", "values": ["b"], "operator": "equals", "type": "label"}]),
            json!([{"key": "a", "values": ["b"], "operator": "is_null", "type": "label"}]),
            json!([{"key": "a", "values": [], "operator": "any_of", "type": "label"}]),
            json!([{"key": "inputs", "values": ["x"], "operator": "any_of", "type": "attribute"}]),
            json!(["nope"]),
        ] {
            let err = parse_rules(&raw).expect_err("invalid");
            assert_eq!(err.error_code(), "invalid_filter_rule", "{raw}");
        }
    }

    fn reason(err: SimError) -> String {
        match err {
            SimError::InvalidFilterRule { reason, .. } => reason,
            other => panic!("not an invalid filter rule: {other:?}"),
        }
    }

    #[test]
    fn a_rule_needs_exactly_four_entries_of_the_right_kinds() {
        for (raw, why) in [
            (json!("nope"), "The filter rule is not a dictionary"),
            (
                json!({"key": "a", "values": ["b"], "operator": "any_of"}),
                "At least one of the entries in the filter rule is missing",
            ),
            (
                json!({"key": "a", "values": [], "operator": "any_of", "type": "label", "x": 1}),
                "At least one of the entries in the filter rule is missing",
            ),
            (
                json!({"key": 1, "values": ["b"], "operator": "any_of", "type": "label"}),
                "The filter rule key must be a string",
            ),
            (
                json!({"key": "a", "values": "b", "operator": "any_of", "type": "label"}),
                "The filter rule values must be a list",
            ),
            (
                json!({"key": "a", "values": ["b"], "operator": "any_of", "type": "tag"}),
                "Filter rule type must be one of label, attribute",
            ),
        ] {
            assert_eq!(reason(parse_rule(&raw).expect_err("invalid")), why, "{raw}");
        }
        let rule = parse_rule(&json!({"key": "Env", "values": ["a", 2, true],
                                      "operator": "any_of", "type": "label"}))
        .expect("valid");
        assert_eq!((rule.key.as_str(), rule.is_label), ("env", true));
        assert_eq!(rule.values, ["a", "2", "true"]);
        assert!(matches!(
            parse_rules(&json!({"key": "a"})),
            Err(SimError::BadParameters(m)) if m == "filter_rules must be a list"
        ));
    }

    #[test]
    fn a_repeated_rule_counts_once() {
        let one = json!({"key": "a", "values": ["b"], "operator": "any_of", "type": "label"});
        let other = json!({"key": "a", "values": ["c"], "operator": "any_of", "type": "label"});
        let rules = parse_rules(&json!([one, other, one])).expect("valid");
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn label_rules_check_the_operator_and_the_values_it_takes() {
        let rule = json!({});
        let values = ["v".to_string()];
        assert_eq!(
            reason(check_label_rule(&rule, "contains", &values).expect_err("attribute operator")),
            "The operator for filtering by labels must be one of any_of, not_any_of, is_null, \
             is_not_null, is_not"
        );
        for op in ["is_null", "is_not_null"] {
            assert_eq!(
                reason(check_label_rule(&rule, op, &values).expect_err("takes no values")),
                "Values list must be empty if the operator is one of is_null, is_not_null"
            );
            check_label_rule(&rule, op, &[]).expect("valid");
        }
        for op in ["any_of", "not_any_of", "is_not"] {
            assert_eq!(
                reason(check_label_rule(&rule, op, &[]).expect_err("needs values")),
                "Values list must include at least one item if the operator is one of any_of, \
                 not_any_of, is_not"
            );
            check_label_rule(&rule, op, &values).expect("valid");
        }
    }

    #[test]
    fn attribute_rules_check_the_operator_its_values_and_the_attribute() {
        let rule = json!({});
        let values = ["v".to_string()];
        assert_eq!(
            reason(check_attribute_rule(&rule, "id", "is_null", &[]).expect_err("label operator")),
            "The operator for filtering by attributes must be one of any_of, not_any_of, \
             contains, not_contains, starts_with, ends_with, is_not_empty"
        );
        assert_eq!(
            reason(
                check_attribute_rule(&rule, "id", "is_not_empty", &values).expect_err("no values")
            ),
            "Values list must be empty if the operator is is_not_empty"
        );
        assert_eq!(
            reason(check_attribute_rule(&rule, "inputs", "any_of", &values).expect_err("attr")),
            "Allowed attributes to filter deployments by are id, blueprint_id, created_by, \
             site_name, schedules, tenant_name, display_name, installation_status"
        );
        check_attribute_rule(&rule, "blueprint_id", "starts_with", &values).expect("valid");
        check_attribute_rule(&rule, "site_name", "is_not_empty", &[]).expect("valid");
    }
}
