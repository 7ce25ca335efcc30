//! Sluice's compiled core: one event's decode, dedupe, rules and effect encoding, as `app.native._core`.
//!
//! The same work as app/ledger.py's `Batch.step` with app/rules/engine.py and the Avro codec of
//! app/avro/schemas.py, writing the same bytes; app/native/__init__.py is its Python face.

mod avro;
mod ingest;
mod json;
mod rules;
mod state;
mod value;

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use serde_json::Value;

use crate::state::{Effect, Entry, Head, UserRecord};

// Every event allocates a dozen small strings and buffers (its head, keys, effect and entry). With
// the system allocator, allocating and freeing them was a third of the compiled step at a steady
// 10,000 events/s (py-spy --native); mimalloc's thread-local free lists make them cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Topic {
    slug: Py<PyString>,
    version: String,
    rules: Vec<rules::Rule>,
    first: usize, // where its rules start in `Program::named`
}

/// The rules of every topic, compiled; what the event and effect schemas look like on the wire.
#[pyclass(module = "app.native._core", frozen)]
struct Program {
    topics: HashMap<String, Topic>,
    // (topic slug, rule id) of every topic's rules, made once
    named: Vec<(Py<PyString>, Py<PyString>)>,
    event_prefixes: Vec<(Vec<u8>, usize)>, // prefix, and how many fields its schema version has
    effect_prefix: Vec<u8>,
    outcomes: [Py<PyAny>; 3], // applied, redelivered, duplicate, as the caller names them
}

#[pymethods]
impl Program {
    /// `spec`: JSON `{slug: {"version": ..., "rules": [...]}}` as app/native/__init__.py writes it.
    #[new]
    fn new(
        py: Python<'_>,
        spec: &[u8],
        event_prefixes: Vec<(Vec<u8>, usize)>,
        effect_prefix: Vec<u8>,
        outcomes: (Py<PyAny>, Py<PyAny>, Py<PyAny>),
    ) -> PyResult<Self> {
        let raw: serde_json::Map<String, Value> =
            serde_json::from_slice(spec).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut topics = HashMap::new();
        let mut named = Vec::new();
        for (slug, topic) in raw {
            let compiled = rules::compile_rules(topic.get("rules").unwrap_or(&Value::Null))
                .map_err(|e| PyValueError::new_err(format!("topic {slug}: {e}")))?;
            let version = topic
                .get("version")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let interned = PyString::intern(py, &slug).unbind();
            let first = named.len();
            named.extend(
                compiled
                    .iter()
                    .map(|r| (interned.clone_ref(py), PyString::intern(py, &r.id).unbind())),
            );
            topics.insert(
                slug.clone(),
                Topic {
                    slug: interned,
                    version,
                    rules: compiled,
                    first,
                },
            );
        }
        Ok(Program {
            topics,
            named,
            event_prefixes,
            effect_prefix,
            outcomes: [outcomes.0, outcomes.1, outcomes.2],
        })
    }
}

/// User records by table key as this worker last wrote them (app/worker/recent_users.py), kept parsed.
#[pyclass(module = "app.native._core", unsendable)]
struct Users {
    capacity: usize,
    generation: Option<i64>,
    records: HashMap<Vec<u8>, (u64, Arc<UserRecord>)>, // with when each was kept, oldest first to go
    clock: u64,
}

#[pymethods]
impl Users {
    #[new]
    fn new(capacity: i64) -> Self {
        Users {
            capacity: capacity.max(0) as usize,
            generation: None,
            records: HashMap::new(),
            clock: 0,
        }
    }

    /// Forget everything when the consumer generation changes; the records to trust otherwise.
    fn of(mut slf: PyRefMut<'_, Self>, generation: Option<i64>) -> PyRefMut<'_, Self> {
        if generation != slf.generation {
            slf.records.clear();
            slf.generation = generation;
        }
        slf
    }

    /// Remember the records a batch wrote, once they are in RocksDB.
    fn keep(&mut self, batch: PyRef<'_, Batch>) {
        if self.capacity == 0 {
            return;
        }
        for (key, user) in &batch.users {
            self.clock += 1;
            self.records.insert(key.clone(), (self.clock, user.clone()));
        }
        if self.records.len() > self.capacity {
            let mut stamps: Vec<u64> = self.records.values().map(|(t, _)| *t).collect();
            stamps.sort_unstable();
            let cut = stamps[stamps.len() - self.capacity / 2 - 1];
            self.records.retain(|_, (t, _)| *t > cut);
        }
    }

    /// (key, user record JSON), oldest first: what is kept, for tests.
    fn items<'py>(&self, py: Python<'py>) -> Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        let mut all: Vec<_> = self.records.iter().collect();
        all.sort_by_key(|(_, (t, _))| *t);
        all.into_iter()
            .map(|(k, (_, u))| (PyBytes::new(py, k), PyBytes::new(py, &u.dump())))
            .collect()
    }

    fn __len__(&self) -> usize {
        self.records.len()
    }
}

/// A run of events from one source partition, deduped and applied in order: `app.ledger.Batch`.
#[pyclass(module = "app.native._core", unsendable)]
struct Batch {
    program: Py<Program>,
    read: Py<PyAny>,
    known: Option<Py<Users>>,
    now_ms: i64,
    window_ms: i64,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    written: HashMap<Vec<u8>, Arc<Entry>>,
    users: IndexMap<Vec<u8>, Arc<UserRecord>>,
    // What the worker's metrics count, kept here so that a step costs no Python for them (`tally`).
    applied: u64,
    duplicates: u64,
    // Times each rule fired, as `Program::named` orders the rules.
    fired: Vec<u64>,
    // received_at of each event whose effect is written (applied or redelivered).
    received_ms: Vec<i64>,
}

fn failed(message: String) -> PyErr {
    if message.contains("64-bit") {
        PyOverflowError::new_err(message)
    } else {
        PyValueError::new_err(message)
    }
}

type Stepped<'py> = (
    Bound<'py, PyAny>,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
    Bound<'py, PyBytes>,
    Bound<'py, PyString>,
    i64,
);

/// (events applied, duplicates dropped, times each (topic slug, rule id) fired, received_at ms of each
/// event whose effect is written).
type Counts<'py> = (u64, u64, Bound<'py, PyDict>, Bound<'py, PyList>);

impl Batch {
    fn read(&self, py: Python<'_>, key: &[u8]) -> PyResult<Option<Vec<u8>>> {
        let raw = self.read.bind(py).call1((PyBytes::new(py, key),))?;
        if raw.is_none() {
            return Ok(None);
        }
        Ok(Some(raw.cast::<PyBytes>()?.as_bytes().to_vec()))
    }

    fn entry(&self, py: Python<'_>, key: &[u8]) -> PyResult<Option<Arc<Entry>>> {
        let entry = match self.written.get(key) {
            Some(entry) => entry.clone(),
            None => match self.read(py, key)? {
                None => return Ok(None),
                Some(raw) => Arc::new(Entry::parse(&raw).map_err(failed)?),
            },
        };
        // An entry past the window counts as absent; the sweep deletes it later.
        Ok(if self.now_ms - entry.applied_at_ms > self.window_ms {
            None
        } else {
            Some(entry)
        })
    }

    fn user(&self, py: Python<'_>, key: &[u8]) -> PyResult<Arc<UserRecord>> {
        if let Some(user) = self.users.get(key) {
            return Ok(user.clone());
        }
        if let Some(known) = &self.known {
            if let Some((_, user)) = known.borrow(py).records.get(key) {
                return Ok(user.clone());
            }
        }
        Ok(Arc::new(match self.read(py, key)? {
            None => UserRecord::default(),
            Some(raw) => UserRecord::parse(&raw).map_err(failed)?,
        }))
    }

    fn write_entry(&mut self, key: Vec<u8>, entry: Arc<Entry>) -> PyResult<()> {
        let value = entry.dump().map_err(failed)?;
        self.entries.push((key.clone(), value));
        self.written.insert(key, entry);
        Ok(())
    }
}

fn table_key(out: &mut Vec<u8>, kind: &str, parts: &[&str]) {
    out.extend_from_slice(b"[\"");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'"');
    for part in parts {
        out.push(b',');
        json::write_str(out, part);
    }
    out.push(b']');
}

#[pymethods]
impl Batch {
    #[new]
    #[pyo3(signature = (program, read, *, now_ms, dedupe_window_s, known=None))]
    fn new(
        program: Py<Program>,
        read: Py<PyAny>,
        now_ms: i64,
        dedupe_window_s: i64,
        known: Option<Py<Users>>,
    ) -> Self {
        let rules = program.get().named.len();
        Batch {
            program,
            read,
            known,
            now_ms,
            window_ms: dedupe_window_s * 1000,
            entries: Vec::new(),
            written: HashMap::new(),
            users: IndexMap::new(),
            applied: 0,
            duplicates: 0,
            fired: vec![0; rules],
            received_ms: Vec::new(),
        }
    }

    /// One event's Avro value as read from Kafka, from `source_topic` at `offset`: (outcome, effect, reply,
    /// key, topic slug, received_at ms); None when the value is not for this program. `tally` counts it.
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        value: &[u8],
        source_topic: &str,
        offset: i64,
    ) -> PyResult<Option<Stepped<'py>>> {
        let program = self.program.clone_ref(py);
        let program = program.get();
        let Some(fields) = program
            .event_prefixes
            .iter()
            .find(|(prefix, _)| {
                value.len() >= avro::HEADER_SIZE && value[..avro::HEADER_SIZE] == prefix[..]
            })
            .map(|(_, fields)| *fields)
        else {
            return Ok(None);
        };
        let Some(event) = avro::decode_event(value, fields) else {
            return Ok(None);
        };
        let Some(topic) = program.topics.get(event.topic) else {
            return Ok(None);
        };
        let mut entry_key = Vec::with_capacity(64);
        table_key(&mut entry_key, "e", &[event.tenant, event.topic, event.id]);
        let mut user_key = Vec::with_capacity(48);
        table_key(&mut user_key, "u", &[event.tenant, event.user_id]);
        let kafka_key = PyBytes::new(py, format!("{}:{}", event.tenant, event.user_id).as_bytes());
        let slug = topic.slug.bind(py).clone();
        let outcome = |n: usize| program.outcomes[n].bind(py).clone();
        let entry = self.entry(py, &entry_key)?;
        let user = self.user(py, &user_key)?;
        let effect_bytes = |entry: &Entry, replayed: bool| -> PyResult<Bound<'py, PyBytes>> {
            let bytes = avro::encode_effect(
                &program.effect_prefix,
                &entry.effect,
                &entry.user_after.state,
                replayed,
            )
            .map_err(failed)?;
            Ok(PyBytes::new(py, &bytes))
        };
        if let Some(entry) = entry {
            if (entry.topic.as_str(), entry.offset) != (source_topic, offset) {
                let reply = effect_bytes(&entry, true)?;
                self.duplicates += 1;
                return Ok(Some((
                    outcome(2),
                    None,
                    Some(reply),
                    kafka_key,
                    slug,
                    event.received_at,
                )));
            }
            // Re-assert both writes: either may have been lost with the crash.
            self.write_entry(entry_key, entry.clone())?;
            let kept = if user.includes(&entry) {
                user
            } else {
                entry.user_after.clone()
            };
            self.users.insert(user_key, kept);
            let effect = effect_bytes(&entry, false)?;
            self.received_ms.push(event.received_at);
            return Ok(Some((
                outcome(1),
                Some(effect),
                None,
                kafka_key,
                slug,
                event.received_at,
            )));
        }
        if user.applied(source_topic, offset) && self.now_ms - event.received_at > self.window_ms {
            self.duplicates += 1;
            return Ok(Some((
                outcome(2),
                None,
                None,
                kafka_key,
                slug,
                event.received_at,
            )));
        }
        let fact = rules::Fact {
            kind: event.kind,
            occurred_at: event.occurred_at,
            data: &event.data,
        };
        let work = rules::run(user.state.clone(), &fact, &topic.rules).map_err(failed)?;
        for rule in &work.fired {
            self.fired[topic.first + rule] += 1;
        }
        let head = Head {
            event_id: event.id.to_owned(),
            tenant: event.tenant.to_owned(),
            topic: event.topic.to_owned(),
            user_id: event.user_id.to_owned(),
            event_type: event.kind.to_owned(),
            occurred_at: event.occurred_at,
            rules_version: topic.version.clone(),
        };
        let (state, changes) = work.finish(&topic.rules);
        let mut offsets = user.offsets.clone();
        let mark = offsets.entry(source_topic.to_owned()).or_insert(-1);
        *mark = (*mark).max(offset);
        let after = Arc::new(UserRecord {
            state,
            seq: user.seq + 1,
            offsets,
        });
        let entry = Entry {
            applied_at_ms: self.now_ms,
            topic: source_topic.to_owned(),
            offset,
            effect: Effect::Fresh(Box::new((head, changes))),
            user_after: after.clone(),
        };
        let effect = effect_bytes(&entry, false)?;
        self.write_entry(entry_key, Arc::new(entry))?;
        self.users.insert(user_key, after);
        self.applied += 1;
        self.received_ms.push(event.received_at);
        Ok(Some((
            outcome(0),
            Some(effect),
            None,
            kafka_key,
            slug,
            event.received_at,
        )))
    }

    /// What the steps so far came to, for the worker's metrics: (events applied, duplicates dropped,
    /// {(topic slug, rule id): times fired}, received_at ms of each event whose effect is written).
    fn tally<'py>(&self, py: Python<'py>) -> PyResult<Counts<'py>> {
        let program = self.program.get();
        let fired = PyDict::new(py);
        for (index, count) in self.fired.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            let (slug, rule) = &program.named[index];
            // Rule ids are unique within a topic (app/rules/parse.py), so each key comes once.
            fired.set_item((slug.bind(py), rule.bind(py)), count)?;
        }
        Ok((
            self.applied,
            self.duplicates,
            fired,
            PyList::new(py, &self.received_ms)?,
        ))
    }

    /// (key, value) of every entry written, in order: all of them go before any of `users`.
    #[getter]
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            self.entries
                .iter()
                .map(|(k, v)| (PyBytes::new(py, k), PyBytes::new(py, v))),
        )
    }

    /// The user records this batch touched, each as it stands at the end of the batch.
    #[getter]
    fn users<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            self.users
                .iter()
                .map(|(k, u)| (PyBytes::new(py, k), PyBytes::new(py, &u.dump()))),
        )
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Program>()?;
    m.add_class::<Users>()?;
    m.add_class::<Batch>()?;
    m.add_function(wrap_pyfunction!(ingest::encode_event, m)?)?;
    m.add_function(wrap_pyfunction!(ingest::json_shape, m)?)?;
    Ok(())
}
