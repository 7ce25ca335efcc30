//! The rule engine (app/rules/engine.py) over a program compiled from a topic's rules.

use std::str::FromStr;

use chrono::{Datelike, TimeZone, Utc};
use serde_json::Value;

use crate::state::{Changes, Counts, Streak, UserState};
use crate::value::{contains, eq, order, walk_json, Val};

const COINS: &str = "coins";
const NO_MATCHING_RULES: &str = "no_matching_rules";
const NO_CHANGE: &str = "no_state_change";
// date(1970, 1, 1).toordinal()
const EPOCH_ORDINAL: i64 = 719_163;
const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
    Exists,
    Contains,
}

pub enum Path {
    Type(bool), // false: `type.x`, always missing
    Data(Vec<String>),
    State(Vec<String>),
}

pub enum Cond {
    Compare { path: Path, op: Op, value: Val },
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
}

pub enum Zone {
    Utc,
    Named(chrono_tz::Tz),
}

pub enum Action {
    AddPoints {
        amount: i64,
        currency: String,
    },
    Increment {
        counter: String,
        by: i64,
    },
    SetCounter {
        counter: String,
        value: i64,
    },
    AwardBadge {
        badge: String,
        counter: Option<String>,
        at_least: i64,
        window_events: i64,
        window_seconds: i64,
    },
    BadgeReady {
        badge: String,
    },
    GrantTokens {
        token: String,
        amount: i64,
    },
    UpdateStreak {
        name: String,
        zone: Zone,
        milestones: Vec<i64>,
    },
    EvolutionReady {
        currency: String,
        levels: Vec<i64>,
    },
    Emit {
        name: String,
        payload: String,
    },
    Stop,
}

pub struct Rule {
    pub id: String,
    pub when: Option<Cond>,
    pub actions: Vec<Action>,
}

type Compiled<T> = Result<T, String>;

fn field<'a>(raw: &'a Value, name: &str) -> Compiled<&'a Value> {
    raw.get(name).ok_or_else(|| format!("no {name} in {raw}"))
}

fn text(raw: &Value, name: &str) -> Compiled<String> {
    field(raw, name)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{name} is not a string"))
}

fn integer(raw: &Value, name: &str) -> Compiled<i64> {
    field(raw, name)?
        .as_i64()
        .ok_or_else(|| format!("{name} is not an integer"))
}

fn integers(raw: &Value, name: &str) -> Compiled<Vec<i64>> {
    let items = field(raw, name)?
        .as_array()
        .ok_or_else(|| format!("{name} is not a list"))?;
    items
        .iter()
        .map(|n| n.as_i64().ok_or_else(|| format!("{name}: not an integer")))
        .collect()
}

fn condition(raw: &Value) -> Compiled<Cond> {
    if let Some(items) = raw.get("all").or_else(|| raw.get("any")) {
        let items = items.as_array().ok_or("all/any: not a list")?;
        let items = items.iter().map(condition).collect::<Compiled<Vec<_>>>()?;
        return Ok(if raw.get("all").is_some() {
            Cond::All(items)
        } else {
            Cond::Any(items)
        });
    }
    if let Some(item) = raw.get("not") {
        return Ok(Cond::Not(Box::new(condition(item)?)));
    }
    let parts = field(raw, "path")?.as_array().ok_or("path: not a list")?;
    let parts = parts
        .iter()
        .map(|p| p.as_str().map(str::to_owned).ok_or("path: not strings"))
        .collect::<Result<Vec<_>, _>>()?;
    let rest = parts[1..].to_vec();
    let path = match parts.first().map(String::as_str) {
        Some("type") => Path::Type(rest.is_empty()),
        Some("data") => Path::Data(rest),
        Some("state") => Path::State(rest),
        other => return Err(format!("path root {other:?}")),
    };
    let op = match text(raw, "op")?.as_str() {
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "gt" => Op::Gt,
        "gte" => Op::Gte,
        "lt" => Op::Lt,
        "lte" => Op::Lte,
        "in" => Op::In,
        "not_in" => Op::NotIn,
        "exists" => Op::Exists,
        "contains" => Op::Contains,
        other => return Err(format!("operator {other} is not compiled")),
    };
    let mut value = Val::from_json(field(raw, "value")?);
    if field(raw, "tuple")?.as_bool() == Some(true) {
        value = match value {
            Val::List(items) => Val::Tuple(items),
            _ => return Err("tuple: not a list".into()),
        };
    }
    Ok(Cond::Compare { path, op, value })
}

fn action(raw: &Value) -> Compiled<Action> {
    let (kind, spec) = raw
        .as_object()
        .and_then(|m| m.iter().next())
        .ok_or("an action is a one-key mapping")?;
    Ok(match kind.as_str() {
        "add_points" => Action::AddPoints {
            amount: integer(spec, "amount")?,
            currency: text(spec, "currency")?,
        },
        "increment" => Action::Increment {
            counter: text(spec, "counter")?,
            by: integer(spec, "by")?,
        },
        "set_counter" => Action::SetCounter {
            counter: text(spec, "counter")?,
            value: integer(spec, "value")?,
        },
        "award_badge" => Action::AwardBadge {
            badge: text(spec, "badge")?,
            counter: field(spec, "counter")?.as_str().map(str::to_owned),
            at_least: integer(spec, "at_least")?,
            window_events: integer(spec, "window_events")?,
            window_seconds: integer(spec, "window_seconds")?,
        },
        "badge_ready" => Action::BadgeReady {
            badge: text(spec, "badge")?,
        },
        "grant_tokens" => Action::GrantTokens {
            token: text(spec, "token")?,
            amount: integer(spec, "amount")?,
        },
        "update_streak" => {
            let timezone = text(spec, "timezone")?;
            let zone = if timezone == "UTC" {
                Zone::Utc
            } else {
                Zone::Named(
                    chrono_tz::Tz::from_str(&timezone)
                        .map_err(|_| format!("time zone {timezone}"))?,
                )
            };
            Action::UpdateStreak {
                name: text(spec, "name")?,
                zone,
                milestones: integers(spec, "milestones")?,
            }
        }
        "evolution_ready" => Action::EvolutionReady {
            currency: text(spec, "currency")?,
            levels: integers(spec, "levels")?,
        },
        "emit" => Action::Emit {
            name: text(spec, "name")?,
            payload: text(spec, "payload")?,
        },
        "stop" => Action::Stop,
        other => return Err(format!("action {other} is not compiled")),
    })
}

pub fn compile_rules(raw: &Value) -> Compiled<Vec<Rule>> {
    let rules = raw.as_array().ok_or("rules: not a list")?;
    rules
        .iter()
        .map(|rule| {
            let when = field(rule, "when")?;
            Ok(Rule {
                id: text(rule, "id")?,
                when: if when.is_null() {
                    None
                } else {
                    Some(condition(when)?)
                },
                actions: field(rule, "then")?
                    .as_array()
                    .ok_or("then: not a list")?
                    .iter()
                    .map(action)
                    .collect::<Compiled<_>>()?,
            })
        })
        .collect()
}

/// What the engine reads of an event.
pub struct Fact<'a> {
    pub kind: &'a str,
    pub occurred_at: i64,
    pub data: &'a Value,
}

fn counts_val(counts: &Counts) -> Val {
    Val::Map(
        counts
            .iter()
            .map(|(k, n)| (k.clone(), Val::Int(*n as i128)))
            .collect(),
    )
}

fn strs_val(items: &[String]) -> Val {
    Val::Tuple(items.iter().map(|s| Val::Str(s.clone())).collect())
}

/// The state as a condition reads it (`_Work.view`): one key, or all of them.
fn view(state: &UserState, key: Option<&str>) -> Val {
    let one = |key: &str| -> Val {
        match key {
            "coins" => Val::Int(state.points.get(COINS).copied().unwrap_or(0) as i128),
            "points" => counts_val(&state.points),
            "counters" => counts_val(&state.counters),
            "badges" => strs_val(&state.badges),
            "badges_ready" => strs_val(&state.badges_ready),
            "tokens" => counts_val(&state.tokens),
            "streaks" => Val::Map(
                state
                    .streaks
                    .iter()
                    .map(|(k, s)| (k.clone(), Val::Int(s.current as i128)))
                    .collect(),
            ),
            _ => Val::Missing,
        }
    };
    match key {
        Some(key) => one(key),
        None => Val::Map(
            [
                "coins",
                "points",
                "counters",
                "badges",
                "badges_ready",
                "tokens",
                "streaks",
            ]
            .iter()
            .map(|k| (k.to_string(), one(k)))
            .collect(),
        ),
    }
}

fn lookup(path: &Path, fact: &Fact, state: &UserState) -> Val {
    match path {
        Path::Type(true) => Val::Str(fact.kind.to_owned()),
        Path::Type(false) => Val::Missing,
        Path::Data(rest) => walk_json(fact.data, rest),
        Path::State(rest) => match rest.split_first() {
            None => view(state, None),
            Some((first, rest)) => match first.as_str() {
                // The common reads, without building the value around them.
                "coins" if rest.is_empty() => view(state, Some("coins")),
                "points" | "counters" | "tokens" if rest.len() == 1 => {
                    let counts = match first.as_str() {
                        "points" => &state.points,
                        "counters" => &state.counters,
                        _ => &state.tokens,
                    };
                    counts
                        .get(&rest[0])
                        .map_or(Val::Missing, |n| Val::Int(*n as i128))
                }
                key => view(state, Some(key)).walk(rest),
            },
        },
    }
}

fn compare(op: Op, expected: &Val, value: &Val) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    if op == Op::Exists {
        return !matches!(value, Val::Missing) == matches!(expected, Val::Bool(true));
    }
    if matches!(value, Val::Missing) {
        return matches!(op, Op::Ne | Op::NotIn);
    }
    match op {
        Op::Eq => eq(value, expected),
        Op::Ne => !eq(value, expected),
        Op::Gt => order(value, expected) == Some(Greater),
        Op::Gte => matches!(order(value, expected), Some(Greater | Equal)),
        Op::Lt => order(value, expected) == Some(Less),
        Op::Lte => matches!(order(value, expected), Some(Less | Equal)),
        Op::In | Op::NotIn => {
            let found = match expected {
                Val::Tuple(items) | Val::List(items) => items.iter().any(|item| eq(value, item)),
                _ => false,
            };
            found == (op == Op::In)
        }
        Op::Contains => contains(value, expected),
        Op::Exists => unreachable!(),
    }
}

fn holds(cond: &Cond, fact: &Fact, state: &UserState) -> bool {
    match cond {
        Cond::All(items) => items.iter().all(|c| holds(c, fact, state)),
        Cond::Any(items) => items.iter().any(|c| holds(c, fact, state)),
        Cond::Not(item) => !holds(item, fact, state),
        Cond::Compare { path, op, value } => compare(*op, value, &lookup(path, fact, state)),
    }
}

fn add(counts: &mut Counts, key: &str, amount: i64) -> Result<(), String> {
    let slot = counts.entry(key.to_owned()).or_insert(0);
    *slot = slot
        .checked_add(amount)
        .ok_or("a count past the 64-bit range")?;
    Ok(())
}

/// One event's changes to one user's state (`_Work`).
pub struct Work<'p> {
    pub state: UserState,
    pub fired: Vec<usize>,
    d_points: Counts,
    d_counters: Counts,
    awarded: Vec<String>,
    ready: Vec<String>,
    granted: Counts,
    evolution_ready: bool,
    milestones: Vec<(String, i64)>,
    emitted: Vec<(&'p str, &'p str)>,
    streak_changed: bool,
}

pub fn run<'p>(state: UserState, fact: &Fact, rules: &'p [Rule]) -> Result<Work<'p>, String> {
    let mut work = Work {
        state,
        fired: Vec::new(),
        d_points: Counts::new(),
        d_counters: Counts::new(),
        awarded: Vec::new(),
        ready: Vec::new(),
        granted: Counts::new(),
        evolution_ready: false,
        milestones: Vec::new(),
        emitted: Vec::new(),
        streak_changed: false,
    };
    for (index, rule) in rules.iter().enumerate() {
        if let Some(when) = &rule.when {
            if !holds(when, fact, &work.state) {
                continue;
            }
        }
        work.fired.push(index);
        let mut stopped = false;
        for action in &rule.actions {
            if matches!(action, Action::Stop) {
                stopped = true;
                break;
            }
            work.apply(rule, action, fact)?;
        }
        if stopped {
            break;
        }
    }
    Ok(work)
}

impl<'p> Work<'p> {
    fn apply(&mut self, rule: &'p Rule, action: &'p Action, fact: &Fact) -> Result<(), String> {
        let st = &mut self.state;
        match action {
            Action::AddPoints { amount, currency } => {
                add(&mut st.points, currency, *amount)?;
                add(&mut self.d_points, currency, *amount)?;
            }
            Action::Increment { counter, by } => {
                add(&mut st.counters, counter, *by)?;
                add(&mut self.d_counters, counter, *by)?;
            }
            Action::SetCounter { counter, value } => {
                let was = st.counters.get(counter).copied().unwrap_or(0);
                let change = value
                    .checked_sub(was)
                    .ok_or("a count past the 64-bit range")?;
                st.counters.insert(counter.clone(), *value);
                add(&mut self.d_counters, counter, change)?;
            }
            Action::AwardBadge {
                badge,
                counter,
                at_least,
                window_events,
                window_seconds,
            } => {
                if self.earned(
                    rule,
                    badge,
                    counter,
                    *at_least,
                    *window_events,
                    *window_seconds,
                    fact,
                ) {
                    self.award(badge);
                }
            }
            Action::BadgeReady { badge } => {
                if !st.badges.contains(badge) && !st.badges_ready.contains(badge) {
                    st.badges_ready.push(badge.clone());
                    self.ready.push(badge.clone());
                }
            }
            Action::GrantTokens { token, amount } => {
                add(&mut st.tokens, token, *amount)?;
                add(&mut self.granted, token, *amount)?;
            }
            Action::UpdateStreak {
                name,
                zone,
                milestones,
            } => self.streak(name, zone, milestones, fact),
            Action::EvolutionReady { currency, levels } => {
                let total = st.points.get(currency).copied().unwrap_or(0);
                let reached = levels
                    .iter()
                    .copied()
                    .filter(|level| total >= *level)
                    .max()
                    .unwrap_or(0);
                if reached > st.levels.get(currency).copied().unwrap_or(0) {
                    st.levels.insert(currency.clone(), reached);
                    self.evolution_ready = true;
                }
            }
            Action::Emit { name, payload } => self.emitted.push((name, payload)),
            Action::Stop => unreachable!(),
        }
        Ok(())
    }

    fn award(&mut self, badge: &str) {
        let st = &mut self.state;
        if st.badges.iter().any(|b| b == badge) {
            return;
        }
        st.badges.push(badge.to_owned());
        self.awarded.push(badge.to_owned());
        st.badges_ready.retain(|b| b != badge);
    }

    #[allow(clippy::too_many_arguments)]
    fn earned(
        &mut self,
        rule: &Rule,
        badge: &str,
        counter: &Option<String>,
        at_least: i64,
        window_events: i64,
        window_seconds: i64,
        fact: &Fact,
    ) -> bool {
        let st = &mut self.state;
        if st.badges.iter().any(|b| b == badge) {
            return false;
        }
        if let Some(counter) = counter {
            return st.counters.get(counter).copied().unwrap_or(0) >= at_least;
        }
        if window_events == 0 {
            return true;
        }
        let key = format!("{}:{}", rule.id, badge);
        let now = fact.occurred_at;
        let start = now - window_seconds * 1000;
        let mut recent: Vec<i64> = st
            .windows
            .get(&key)
            .map(|times| times.to_vec())
            .unwrap_or_default();
        recent.push(now);
        recent.retain(|t| start <= *t && *t <= now);
        recent.sort_unstable();
        if recent.len() as i64 >= window_events {
            st.windows.shift_remove(&key);
            return true;
        }
        let keep = (window_events - 1) as usize;
        let from = recent.len().saturating_sub(keep);
        st.windows.insert(key, recent.split_off(from));
        false
    }

    fn streak(&mut self, name: &str, zone: &Zone, milestones: &[i64], fact: &Fact) {
        let ms = fact.occurred_at;
        let day = match zone {
            Zone::Utc => ms.div_euclid(DAY_MS) + EPOCH_ORDINAL,
            Zone::Named(tz) => match Utc.timestamp_millis_opt(ms).single() {
                Some(at) => at.with_timezone(tz).date_naive().num_days_from_ce() as i64,
                None => ms.div_euclid(DAY_MS) + EPOCH_ORDINAL,
            },
        };
        let st = &mut self.state;
        let streak = st.streaks.get(name).cloned().unwrap_or_default();
        if day <= streak.last_day {
            return;
        }
        let current = if day == streak.last_day + 1 {
            streak.current + 1
        } else {
            1
        };
        let updated = Streak {
            current,
            longest: streak.longest.max(current),
            last_day: day,
        };
        st.streaks.insert(name.to_owned(), updated);
        self.streak_changed = true;
        if milestones.contains(&current) {
            self.milestones.push((name.to_owned(), current));
        }
    }

    /// What the event changed, and the state after it: the effect record but for its head and totals.
    pub fn finish(mut self, rules: &[Rule]) -> (UserState, Changes) {
        self.d_points.retain(|_, v| *v != 0);
        self.d_counters.retain(|_, v| *v != 0);
        self.granted.retain(|_, v| *v != 0);
        let changed = !self.d_points.is_empty()
            || !self.d_counters.is_empty()
            || !self.awarded.is_empty()
            || !self.ready.is_empty()
            || !self.granted.is_empty()
            || self.evolution_ready
            || !self.milestones.is_empty()
            || !self.emitted.is_empty()
            || self.streak_changed;
        let reason = if changed {
            None
        } else if self.fired.is_empty() {
            Some(NO_MATCHING_RULES)
        } else {
            Some(NO_CHANGE)
        };
        let changes = Changes {
            rules_fired: self.fired.iter().map(|i| rules[*i].id.clone()).collect(),
            points: self.d_points,
            counters: self.d_counters,
            awarded: self.awarded,
            ready: self.ready,
            tokens: self.granted,
            evolution_ready: self.evolution_ready,
            milestones: self.milestones,
            custom: self
                .emitted
                .into_iter()
                .map(|(n, p)| (n.to_owned(), p.to_owned()))
                .collect(),
            debug_reason: reason,
        };
        (self.state, changes)
    }
}
