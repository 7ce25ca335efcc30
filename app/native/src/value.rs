//! Values as the condition language sees them, compared with Python's semantics (app/core/conditions.py).

use std::cmp::Ordering;

use serde_json::Value;

/// A Python value a condition reads or compares with. `Tuple` is what the rule parser freezes a
/// condition's list into (and the state's badges): Python never finds a list equal to a tuple.
#[derive(Clone, Debug)]
pub enum Val {
    Missing,
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<Val>),
    Tuple(Vec<Val>),
    Map(Vec<(String, Val)>),
}

impl Val {
    pub fn from_json(value: &Value) -> Val {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Val::Int(i as i128)
                } else if let Some(u) = n.as_u64() {
                    Val::Int(u as i128)
                } else {
                    Val::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => Val::Str(s.clone()),
            Value::Array(items) => Val::List(items.iter().map(Val::from_json).collect()),
            Value::Object(map) => Val::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), Val::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Follow `rest` down nested mappings, as `walk` does: Missing where a step is absent.
    pub fn walk(self, rest: &[String]) -> Val {
        let mut value = self;
        for part in rest {
            value = match value {
                Val::Map(items) => match items.into_iter().find(|(k, _)| k == part) {
                    Some((_, v)) => v,
                    None => return Val::Missing,
                },
                _ => return Val::Missing,
            };
        }
        value
    }
}

/// Follow `rest` down a JSON value without copying what is not reached.
pub fn walk_json(value: &Value, rest: &[String]) -> Val {
    let mut value = value;
    for part in rest {
        match value {
            Value::Object(map) => match map.get(part.as_str()) {
                Some(v) => value = v,
                None => return Val::Missing,
            },
            _ => return Val::Missing,
        }
    }
    Val::from_json(value)
}

enum Num {
    Int(i128),
    Float(f64),
}

fn number(value: &Val) -> Option<Num> {
    match value {
        Val::Bool(b) => Some(Num::Int(*b as i128)),
        Val::Int(i) => Some(Num::Int(*i)),
        Val::Float(f) => Some(Num::Float(*f)),
        _ => None,
    }
}

/// An int against a float, exactly, as Python compares them (no rounding of the int).
fn int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= 1.7e38 {
        return Some(Ordering::Less);
    }
    if f <= -1.7e38 {
        return Some(Ordering::Greater);
    }
    let floor = f.floor();
    let whole = floor as i128;
    match i.cmp(&whole) {
        Ordering::Equal if f > floor => Some(Ordering::Less),
        other => Some(other),
    }
}

fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
        (Num::Int(x), Num::Float(y)) => int_float(x, y),
        (Num::Float(x), Num::Int(y)) => int_float(y, x).map(Ordering::reverse),
    }
}

/// `a == b` in Python.
pub fn eq(a: &Val, b: &Val) -> bool {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return num_cmp(x, y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::List(x), Val::List(y)) | (Val::Tuple(x), Val::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| eq(p, q))
        }
        (Val::Map(x), Val::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(l, w)| k == l && eq(v, w)))
        }
        _ => false,
    }
}

/// Python's ordering of two values; None where Python raises TypeError.
pub fn order(a: &Val, b: &Val) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return num_cmp(x, y);
    }
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Some(x.as_str().cmp(y.as_str())),
        (Val::List(x), Val::List(y)) | (Val::Tuple(x), Val::Tuple(y)) => {
            // The first items that differ decide; if none, the shorter sequence is less.
            match x.iter().zip(y).find(|(p, q)| !eq(p, q)) {
                Some((p, q)) => order(p, q),
                None => Some(x.len().cmp(&y.len())),
            }
        }
        _ => None,
    }
}

/// `expected in value` for `contains`: substrings, items, or a mapping's keys.
pub fn contains(value: &Val, expected: &Val) -> bool {
    match (value, expected) {
        (Val::Str(s), Val::Str(e)) => s.contains(e.as_str()),
        (Val::List(items) | Val::Tuple(items), _) => items.iter().any(|item| eq(item, expected)),
        (Val::Map(items), Val::Str(e)) => items.iter().any(|(k, _)| k == e),
        _ => false,
    }
}
