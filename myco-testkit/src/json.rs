//! Reading the JSON that the daemon's API and `myco --json` print.

use serde_json::Value;

/// One service as `/services` and `myco ls --json` list it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRow {
    pub name: String,
    pub clock: u64,
    pub key_id: u64,
    pub deleted: bool,
}

/// The rows of a `{"services": [...]}` answer, sorted by name.
#[track_caller]
pub fn services_of(json: &Value) -> Vec<ServiceRow> {
    let rows = json["services"]
        .as_array()
        .unwrap_or_else(|| panic!("no services list: {json}"));
    let mut rows: Vec<ServiceRow> = rows
        .iter()
        .map(|s| ServiceRow {
            name: s["name"].as_str().expect("name").to_string(),
            clock: s["version"]["clock"].as_u64().expect("version.clock"),
            key_id: s["version"]["key_id"].as_u64().expect("version.key_id"),
            deleted: s["deleted"].as_bool().expect("deleted"),
        })
        .collect();
    rows.sort();
    rows
}

/// The value of `key` in the JSON object `json`, as text: a string without its quotes, anything
/// else as JSON writes it. Panics if `json` is not an object holding `key`.
#[track_caller]
pub fn json_field(json: &str, key: &str) -> String {
    let value: Value =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => panic!("no {key} in {json}"),
    }
}

/// The value after `name` in human output (`name  value` lines).
#[track_caller]
pub fn text_field(text: &str, name: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name));
    line.unwrap_or_else(|| panic!("no {name} in {text}"))
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("{name} has no value in {text}"))
        .to_string()
}

/// The whole-number field `key` of the JSON object `json`, if it is there and is one.
pub fn u64_field(json: &str, key: &str) -> Option<u64> {
    serde_json::from_str::<Value>(json).ok()?.get(key)?.as_u64()
}
