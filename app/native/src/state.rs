//! User records and dedupe entries as the ledger keeps them (app/ledger.py), read and written as the same JSON.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::json::{write_counts, write_int, write_str, write_strs, write_value};

pub type Counts = IndexMap<String, i64>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Streak {
    pub current: i64,
    pub longest: i64,
    pub last_day: i64,
}

#[derive(Clone, Debug, Default)]
pub struct UserState {
    pub points: Counts,
    pub counters: Counts,
    pub badges: Vec<String>,
    pub badges_ready: Vec<String>,
    pub tokens: Counts,
    pub streaks: IndexMap<String, Streak>,
    pub levels: Counts,
    pub windows: IndexMap<String, Vec<i64>>,
}

#[derive(Clone, Debug, Default)]
pub struct UserRecord {
    pub state: UserState,
    pub seq: i64,
    pub offsets: Counts,
}

/// What an event changed (`effect_dict` but for the totals, which are the user's state after it).
pub struct Changes {
    pub rules_fired: Vec<String>,
    pub points: Counts,
    pub counters: Counts,
    pub awarded: Vec<String>,
    pub ready: Vec<String>,
    pub tokens: Counts,
    pub evolution_ready: bool,
    pub milestones: Vec<(String, i64)>,
    pub custom: Vec<(String, String)>, // name, payload as JSON text
    pub debug_reason: Option<&'static str>,
}

/// The event's part of an effect record.
pub struct Head {
    pub event_id: String,
    pub tenant: String,
    pub topic: String,
    pub user_id: String,
    pub event_type: String,
    pub occurred_at: i64,
    pub rules_version: String,
}

/// The Avro Effect record an entry holds: made by this batch, or read back from the table as it is there.
pub enum Effect {
    Fresh(Box<(Head, Changes)>),
    Stored(Value),
}

pub struct Entry {
    pub applied_at_ms: i64,
    pub topic: String,
    pub offset: i64,
    pub effect: Effect,
    pub user_after: Arc<UserRecord>, // and the totals of a fresh effect
}

type Parsed<T> = Result<T, String>;

fn int(value: &Value, what: &str) -> Parsed<i64> {
    value
        .as_i64()
        .ok_or_else(|| format!("{what}: not an integer"))
}

fn object<'a>(value: &'a Value, what: &str) -> Parsed<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| format!("{what}: not a mapping"))
}

fn counts(raw: &Map<String, Value>, name: &str) -> Parsed<Counts> {
    match raw.get(name) {
        None => Ok(Counts::new()),
        Some(v) => object(v, name)?
            .iter()
            .map(|(k, n)| Ok((k.clone(), int(n, name)?)))
            .collect(),
    }
}

fn strings(raw: &Map<String, Value>, name: &str) -> Parsed<Vec<String>> {
    match raw.get(name) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{name}: not a string"))
            })
            .collect(),
        Some(_) => Err(format!("{name}: not a list")),
    }
}

impl UserState {
    fn from_json(raw: &Value) -> Parsed<Self> {
        let raw = object(raw, "state")?;
        let mut streaks = IndexMap::new();
        if let Some(v) = raw.get("streaks") {
            for (name, s) in object(v, "streaks")? {
                let mut streak = Streak::default();
                for (field, n) in object(s, "streak")? {
                    let n = int(n, "streak")?;
                    match field.as_str() {
                        "current" => streak.current = n,
                        "longest" => streak.longest = n,
                        "last_day" => streak.last_day = n,
                        other => return Err(format!("streak: unknown field {other}")),
                    }
                }
                streaks.insert(name.clone(), streak);
            }
        }
        let mut windows = IndexMap::new();
        if let Some(v) = raw.get("windows") {
            for (key, times) in object(v, "windows")? {
                let times = times.as_array().ok_or("windows: not a list")?;
                windows.insert(
                    key.clone(),
                    times
                        .iter()
                        .map(|t| int(t, "windows"))
                        .collect::<Parsed<_>>()?,
                );
            }
        }
        Ok(UserState {
            points: counts(raw, "points")?,
            counters: counts(raw, "counters")?,
            badges: strings(raw, "badges")?,
            badges_ready: strings(raw, "badges_ready")?,
            tokens: counts(raw, "tokens")?,
            streaks,
            levels: counts(raw, "levels")?,
            windows,
        })
    }

    /// From the points' value to the tokens', in the order the state and an effect's totals share.
    fn write_collections(&self, out: &mut Vec<u8>) {
        write_counts(out, self.points.iter());
        out.extend_from_slice(b",\"counters\":");
        write_counts(out, self.counters.iter());
        out.extend_from_slice(b",\"badges\":");
        write_strs(out, &self.badges);
        out.extend_from_slice(b",\"badges_ready\":");
        write_strs(out, &self.badges_ready);
        out.extend_from_slice(b",\"tokens\":");
        write_counts(out, self.tokens.iter());
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"points\":");
        self.write_collections(out);
        out.extend_from_slice(b",\"streaks\":{");
        for (i, (name, s)) in self.streaks.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, name);
            out.extend_from_slice(b":{\"current\":");
            write_int(out, s.current);
            out.extend_from_slice(b",\"longest\":");
            write_int(out, s.longest);
            out.extend_from_slice(b",\"last_day\":");
            write_int(out, s.last_day);
            out.push(b'}');
        }
        out.extend_from_slice(b"},\"levels\":");
        write_counts(out, self.levels.iter());
        out.extend_from_slice(b",\"windows\":{");
        for (i, (key, times)) in self.windows.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, key);
            out.extend_from_slice(b":[");
            for (j, t) in times.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_int(out, *t);
            }
            out.push(b']');
        }
        out.extend_from_slice(b"}}");
    }
}

impl UserRecord {
    pub fn from_json(raw: &Value) -> Parsed<Self> {
        let raw = object(raw, "user record")?;
        let field = |name: &str| {
            raw.get(name)
                .ok_or_else(|| format!("user record: no {name}"))
        };
        let offsets = object(field("offsets")?, "offsets")?;
        Ok(UserRecord {
            state: UserState::from_json(field("state")?)?,
            seq: int(field("seq")?, "seq")?,
            offsets: offsets
                .iter()
                .map(|(k, n)| Ok((k.clone(), int(n, "offsets")?)))
                .collect::<Parsed<_>>()?,
        })
    }

    pub fn parse(raw: &[u8]) -> Parsed<Self> {
        let value: Value = serde_json::from_slice(raw).map_err(|e| format!("user record: {e}"))?;
        Self::from_json(&value)
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"state\":");
        self.state.write(out);
        out.extend_from_slice(b",\"seq\":");
        write_int(out, self.seq);
        out.extend_from_slice(b",\"offsets\":");
        write_counts(out, self.offsets.iter());
        out.push(b'}');
    }

    pub fn dump(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out);
        out
    }

    pub fn includes(&self, entry: &Entry) -> bool {
        self.seq >= entry.user_after.seq
    }

    pub fn applied(&self, topic: &str, offset: i64) -> bool {
        self.offsets.get(topic).copied().unwrap_or(-1) >= offset
    }
}

impl Entry {
    pub fn parse(raw: &[u8]) -> Parsed<Self> {
        let mut value: Value = serde_json::from_slice(raw).map_err(|e| format!("entry: {e}"))?;
        let raw = value.as_object_mut().ok_or("entry: not a mapping")?;
        let mut take = |name: &str| {
            raw.get_mut(name)
                .map(Value::take)
                .ok_or_else(|| format!("entry: no {name}"))
        };
        let applied_at_ms = int(&take("applied_at_ms")?, "applied_at_ms")?;
        let topic = take("topic")?
            .as_str()
            .ok_or("entry: topic is not a string")?
            .to_owned();
        let offset = int(&take("offset")?, "offset")?;
        let effect = Effect::Stored(take("effect")?);
        let user_after = Arc::new(UserRecord::from_json(&take("user_after")?)?);
        Ok(Entry {
            applied_at_ms,
            topic,
            offset,
            effect,
            user_after,
        })
    }

    pub fn dump(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"applied_at_ms\":");
        write_int(&mut out, self.applied_at_ms);
        out.extend_from_slice(b",\"topic\":");
        write_str(&mut out, &self.topic);
        out.extend_from_slice(b",\"offset\":");
        write_int(&mut out, self.offset);
        out.extend_from_slice(b",\"effect\":");
        match &self.effect {
            Effect::Stored(value) => write_value(&mut out, value)?,
            Effect::Fresh(fresh) => {
                write_fresh(&mut out, &fresh.0, &fresh.1, &self.user_after.state)
            }
        }
        out.extend_from_slice(b",\"user_after\":");
        self.user_after.write(&mut out);
        out.push(b'}');
        Ok(out)
    }
}

fn write_key(out: &mut Vec<u8>, first: bool, key: &str) {
    if !first {
        out.push(b',');
    }
    write_str(out, key);
    out.push(b':');
}

/// `orjson.dumps(_record(...))` of app/ledger.py.
fn write_fresh(out: &mut Vec<u8>, head: &Head, changes: &Changes, totals: &UserState) {
    out.push(b'{');
    for (i, (key, value)) in [
        ("event_id", &head.event_id),
        ("tenant", &head.tenant),
        ("topic", &head.topic),
        ("user_id", &head.user_id),
        ("event_type", &head.event_type),
    ]
    .into_iter()
    .enumerate()
    {
        write_key(out, i == 0, key);
        write_str(out, value);
    }
    write_key(out, false, "occurred_at");
    write_int(out, head.occurred_at);
    write_key(out, false, "rules_version");
    write_str(out, &head.rules_version);
    out.extend_from_slice(b",\"replayed\":false,\"rules_fired\":");
    write_strs(out, &changes.rules_fired);
    out.extend_from_slice(b",\"changes\":{\"coins\":");
    write_int(out, changes.points.get("coins").copied().unwrap_or(0));
    out.extend_from_slice(b",\"points\":");
    write_counts(out, changes.points.iter());
    out.extend_from_slice(b",\"counters\":");
    write_counts(out, changes.counters.iter());
    out.extend_from_slice(b",\"badges_awarded\":");
    write_strs(out, &changes.awarded);
    out.extend_from_slice(b",\"badges_ready\":");
    write_strs(out, &changes.ready);
    out.extend_from_slice(b",\"tokens\":");
    write_counts(out, changes.tokens.iter());
    out.extend_from_slice(if changes.evolution_ready {
        b",\"evolution_ready\":true,\"streak_milestones\":["
    } else {
        b",\"evolution_ready\":false,\"streak_milestones\":["
    });
    for (i, (name, days)) in changes.milestones.iter().enumerate() {
        out.extend_from_slice(if i == 0 {
            b"{\"streak\":"
        } else {
            b",{\"streak\":"
        });
        write_str(out, name);
        out.extend_from_slice(b",\"days\":");
        write_int(out, *days);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"custom\":[");
    for (i, (name, payload)) in changes.custom.iter().enumerate() {
        out.extend_from_slice(if i == 0 {
            b"{\"name\":"
        } else {
            b",{\"name\":"
        });
        write_str(out, name);
        out.extend_from_slice(b",\"payload\":");
        write_str(out, payload);
        out.push(b'}');
    }
    out.extend_from_slice(b"]},\"totals\":{\"coins\":");
    write_int(out, totals.points.get("coins").copied().unwrap_or(0));
    out.extend_from_slice(b",\"points\":");
    totals.write_collections(out);
    out.extend_from_slice(b",\"streaks\":{");
    for (i, (name, s)) in totals.streaks.iter().enumerate() {
        write_key(out, i == 0, name);
        out.extend_from_slice(b"{\"current\":");
        write_int(out, s.current);
        out.extend_from_slice(b",\"longest\":");
        write_int(out, s.longest);
        out.push(b'}');
    }
    out.extend_from_slice(b"}},\"debug_reason\":");
    match changes.debug_reason {
        Some(reason) => write_str(out, reason),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}
