//! The Avro binary forms Sluice's worker reads and writes: the Event (schemas/event.avsc) in, the Effect
//! (schemas/effect.avsc) out, with single-object encoding's prefix (app/avro/schemas.py).

use serde_json::{Map, Value};

use crate::state::{self, Changes, Effect, Head, UserState};

pub const HEADER_SIZE: usize = 10;
// What datetime can hold (years 1 to 9999): Python fails to decode a timestamp outside it.
const MIN_MS: i64 = -62_135_596_800_000;
const MAX_MS: i64 = 253_402_300_799_999;

/// The fields of an event the worker reads; `data` parsed, `metadata` only checked to be JSON.
pub struct Event<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub topic: &'a str,
    pub kind: &'a str,
    pub user_id: &'a str,
    pub occurred_at: i64,
    pub received_at: i64,
    pub data: Value,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn long(&mut self) -> Option<i64> {
        let mut n: u128 = 0;
        for shift in 0..10 {
            let b = *self.data.get(self.pos)?;
            self.pos += 1;
            n |= ((b & 0x7f) as u128) << (7 * shift);
            if b < 0x80 {
                let value = ((n >> 1) as i128) ^ -((n & 1) as i128);
                return i64::try_from(value).ok();
            }
        }
        None
    }

    fn string(&mut self) -> Option<&'a str> {
        let size = usize::try_from(self.long()?).ok()?;
        let end = self.pos.checked_add(size)?;
        let bytes = self.data.get(self.pos..end)?;
        self.pos = end;
        std::str::from_utf8(bytes).ok()
    }

    fn timestamp(&mut self) -> Option<i64> {
        self.long().filter(|ms| (MIN_MS..=MAX_MS).contains(ms))
    }

    /// A ["null", X] union: None for null, Some(()) when X follows.
    fn nullable(&mut self) -> Option<Option<()>> {
        match self.long()? {
            0 => Some(None),
            1 => Some(Some(())),
            _ => None,
        }
    }
}

/// Decode an event's binary form after its prefix; `fields` is how many of the schema's fields the writer had.
/// None when it does not decode as Python would decode it (the worker's own path then decides).
pub fn decode_event(data: &[u8], fields: usize) -> Option<Event<'_>> {
    let mut r = Reader {
        data,
        pos: HEADER_SIZE,
    };
    let id = r.string()?;
    let tenant = r.string()?;
    let topic = r.string()?;
    let kind = r.string()?;
    let user_id = r.string()?;
    let occurred_at = r.timestamp()?;
    let received_at = r.timestamp()?;
    for _ in 0..2 {
        if r.nullable()?.is_some() {
            r.timestamp()?; // sent_at, send_at
        }
    }
    if r.nullable()?.is_some() {
        r.string()?; // audience
    }
    let data_text = r.string()?;
    let metadata_text = r.string()?;
    r.string()?; // dialect
    if fields > 13 && r.nullable()?.is_some() {
        r.string()?; // wait_group_instance_id
    }
    let data: Value = serde_json::from_str(data_text).ok()?;
    serde_json::from_str::<serde::de::IgnoredAny>(metadata_text).ok()?;
    Some(Event {
        id,
        tenant,
        topic,
        kind,
        user_id,
        occurred_at,
        received_at,
        data,
    })
}

pub fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub fn write_string(out: &mut Vec<u8>, s: &str) {
    write_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

type Encoded = Result<(), String>;

enum Field {
    Str,
    Long,
    Bool,
    Strings,
    Counts,
    Record(&'static [(&'static str, Field, Absent)]),
    Array(&'static [(&'static str, Field, Absent)]),
    Map(&'static [(&'static str, Field, Absent)]),
    NullableStr,
}

/// What a missing field takes (as the compiled codec and fastavro: its default, or null if nullable).
#[derive(Clone, Copy)]
enum Absent {
    Required,
    Zero,
    Empty,
    False,
    Null,
}

use Absent::{Empty, False, Null, Required, Zero};
use Field::{Array, Bool, Counts, Long, NullableStr, Record, Str, Strings};

const MILESTONE: &[(&str, Field, Absent)] = &[("streak", Str, Required), ("days", Long, Required)];
const CUSTOM: &[(&str, Field, Absent)] = &[("name", Str, Required), ("payload", Str, Required)];
const STREAK_TOTAL: &[(&str, Field, Absent)] =
    &[("current", Long, Required), ("longest", Long, Required)];
const CHANGES: &[(&str, Field, Absent)] = &[
    ("coins", Long, Zero),
    ("points", Counts, Empty),
    ("counters", Counts, Empty),
    ("badges_awarded", Strings, Empty),
    ("badges_ready", Strings, Empty),
    ("tokens", Counts, Empty),
    ("evolution_ready", Bool, False),
    ("streak_milestones", Array(MILESTONE), Empty),
    ("custom", Array(CUSTOM), Empty),
];
const TOTALS: &[(&str, Field, Absent)] = &[
    ("coins", Long, Zero),
    ("points", Counts, Empty),
    ("counters", Counts, Empty),
    ("badges", Strings, Empty),
    ("badges_ready", Strings, Empty),
    ("tokens", Counts, Empty),
    ("streaks", Field::Map(STREAK_TOTAL), Empty),
];
const EFFECT: &[(&str, Field, Absent)] = &[
    ("event_id", Str, Required),
    ("tenant", Str, Required),
    ("topic", Str, Required),
    ("user_id", Str, Required),
    ("event_type", Str, Required),
    ("occurred_at", Long, Required),
    ("rules_version", Str, Required),
    ("rules_fired", Strings, Required),
    ("changes", Record(CHANGES), Required),
    ("totals", Record(TOTALS), Required),
    ("replayed", Bool, False),
    ("debug_reason", NullableStr, Null),
];

fn record(
    out: &mut Vec<u8>,
    fields: &[(&str, Field, Absent)],
    value: &Map<String, Value>,
) -> Encoded {
    for (name, field, default) in fields {
        match value.get(*name) {
            Some(v) => write_field(out, field, v)?,
            None => match default {
                Required => return Err(format!("effect: no {name}")),
                Zero | Empty | False | Null => out.push(0), // 0, an empty block, false, the null branch
            },
        }
    }
    Ok(())
}

fn items<'v>(value: &'v Value, what: &str) -> Result<&'v Vec<Value>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("effect: {what} is not a list"))
}

fn write_field(out: &mut Vec<u8>, field: &Field, value: &Value) -> Encoded {
    match field {
        Str => write_string(out, value.as_str().ok_or("effect: not a string")?),
        Long => write_long(out, value.as_i64().ok_or("effect: not a long")?),
        Bool => match value {
            Value::Bool(b) => out.push(*b as u8),
            _ => return Err("effect: not a boolean".into()),
        },
        NullableStr => match value {
            Value::Null => out.push(0),
            Value::String(s) => {
                out.push(2);
                write_string(out, s);
            }
            _ => return Err("effect: not a string or null".into()),
        },
        Strings => {
            let list = items(value, "array")?;
            if !list.is_empty() {
                write_long(out, list.len() as i64);
                for item in list {
                    write_field(out, &Str, item)?;
                }
            }
            out.push(0);
        }
        Counts => {
            let map = value.as_object().ok_or("effect: not a map")?;
            if !map.is_empty() {
                write_long(out, map.len() as i64);
                for (key, n) in map {
                    write_string(out, key);
                    write_field(out, &Long, n)?;
                }
            }
            out.push(0);
        }
        Record(fields) => record(
            out,
            fields,
            value.as_object().ok_or("effect: not a record")?,
        )?,
        Array(fields) => {
            let list = items(value, "array")?;
            if !list.is_empty() {
                write_long(out, list.len() as i64);
                for item in list {
                    record(out, fields, item.as_object().ok_or("effect: not a record")?)?;
                }
            }
            out.push(0);
        }
        Field::Map(fields) => {
            let map = value.as_object().ok_or("effect: not a map")?;
            if !map.is_empty() {
                write_long(out, map.len() as i64);
                for (key, item) in map {
                    write_string(out, key);
                    record(out, fields, item.as_object().ok_or("effect: not a record")?)?;
                }
            }
            out.push(0);
        }
    }
    Ok(())
}

/// `schemas["effect"].encode(effect)` (with `replayed` set, for a reply): the prefix, then the record.
pub fn encode_effect(
    prefix: &[u8],
    effect: &Effect,
    totals: &UserState,
    replayed: bool,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(prefix);
    let effect = match effect {
        Effect::Fresh(fresh) => {
            encode_fresh(&mut out, &fresh.0, &fresh.1, totals, replayed);
            return Ok(out);
        }
        Effect::Stored(value) => value,
    };
    let map = effect.as_object().ok_or("effect: not a record")?;
    if replayed {
        let mut copy = map.clone();
        copy.insert("replayed".into(), Value::Bool(true));
        record(&mut out, EFFECT, &copy)?;
    } else {
        record(&mut out, EFFECT, map)?;
    }
    Ok(out)
}

fn write_strings(out: &mut Vec<u8>, items: &[String]) {
    if !items.is_empty() {
        write_long(out, items.len() as i64);
        for item in items {
            write_string(out, item);
        }
    }
    out.push(0);
}

fn write_counts(out: &mut Vec<u8>, counts: &state::Counts) {
    if !counts.is_empty() {
        write_long(out, counts.len() as i64);
        for (key, n) in counts {
            write_string(out, key);
            write_long(out, *n);
        }
    }
    out.push(0);
}

fn encode_fresh(
    out: &mut Vec<u8>,
    head: &Head,
    changes: &Changes,
    totals: &UserState,
    replayed: bool,
) {
    for s in [
        &head.event_id,
        &head.tenant,
        &head.topic,
        &head.user_id,
        &head.event_type,
    ] {
        write_string(out, s);
    }
    write_long(out, head.occurred_at);
    write_string(out, &head.rules_version);
    write_strings(out, &changes.rules_fired);
    write_long(out, changes.points.get("coins").copied().unwrap_or(0));
    write_counts(out, &changes.points);
    write_counts(out, &changes.counters);
    write_strings(out, &changes.awarded);
    write_strings(out, &changes.ready);
    write_counts(out, &changes.tokens);
    out.push(changes.evolution_ready as u8);
    if !changes.milestones.is_empty() {
        write_long(out, changes.milestones.len() as i64);
        for (name, days) in &changes.milestones {
            write_string(out, name);
            write_long(out, *days);
        }
    }
    out.push(0);
    if !changes.custom.is_empty() {
        write_long(out, changes.custom.len() as i64);
        for (name, payload) in &changes.custom {
            write_string(out, name);
            write_string(out, payload);
        }
    }
    out.push(0);
    write_long(out, totals.points.get("coins").copied().unwrap_or(0));
    write_counts(out, &totals.points);
    write_counts(out, &totals.counters);
    write_strings(out, &totals.badges);
    write_strings(out, &totals.badges_ready);
    write_counts(out, &totals.tokens);
    if !totals.streaks.is_empty() {
        write_long(out, totals.streaks.len() as i64);
        for (name, s) in &totals.streaks {
            write_string(out, name);
            write_long(out, s.current);
            write_long(out, s.longest);
        }
    }
    out.push(0);
    out.push(replayed as u8);
    match changes.debug_reason {
        None => out.push(0),
        Some(reason) => {
            out.push(2);
            write_string(out, reason);
        }
    }
}
