//! The producer's per-event work: the Event record's Avro bytes, and the check of a parsed JSON body.
//!
//! `encode_event` writes what app/avro/codec.py's compiled Event codec writes for a due event with
//! no wait group (app/producer/ingest_records.py), byte for byte; `json_shape` is the walk of
//! app/core/json_text.py's `_needs_exact_integers` without the names it only makes for an error.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyList};

use crate::avro::{write_long, write_string};

fn write_raw_string(out: &mut Vec<u8>, text: &[u8]) {
    write_long(out, text.len() as i64);
    out.extend_from_slice(text);
}

/// The Event record, single-object encoded behind `prefix` (marker and fingerprint): its send_at and
/// wait_group_instance_id null. `data` and `metadata` are JSON text as orjson writes it (UTF-8).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn encode_event<'py>(
    py: Python<'py>,
    prefix: &[u8],
    id: &str,
    tenant: &str,
    topic: &str,
    kind: &str,
    user_id: &str,
    occurred_at: i64,
    received_at: i64,
    sent_at: Option<i64>,
    audience: Option<&str>,
    data: &[u8],
    metadata: &[u8],
    dialect: &str,
) -> Bound<'py, PyBytes> {
    let mut out = Vec::with_capacity(
        prefix.len() + 64 + id.len() + user_id.len() + data.len() + metadata.len(),
    );
    out.extend_from_slice(prefix);
    write_string(&mut out, id);
    write_string(&mut out, tenant);
    write_string(&mut out, topic);
    write_string(&mut out, kind);
    write_string(&mut out, user_id);
    write_long(&mut out, occurred_at);
    write_long(&mut out, received_at);
    match sent_at {
        None => out.push(0),
        Some(ms) => {
            out.push(2); // the union's branch 1 (long), zigzag
            write_long(&mut out, ms);
        }
    }
    out.push(0); // send_at: null
    match audience {
        None => out.push(0),
        Some(text) => {
            out.push(2);
            write_string(&mut out, text);
        }
    }
    write_raw_string(&mut out, data);
    write_raw_string(&mut out, metadata);
    write_string(&mut out, dialect);
    out.push(0); // wait_group_instance_id: null
    PyBytes::new(py, &out)
}

const SMALLEST: f64 = -9_223_372_036_854_775_808.0; // -2^63
const PAST_LARGEST: f64 = 18_446_744_073_709_551_616.0; // 2^64: no float lies in [2^64 - 1, 2^64)

fn suspect(value: f64) -> bool {
    // Python's `value.is_integer() and not -2**63 < value < 2**64 - 1`.
    value.is_finite() && value.fract() == 0.0 && !(SMALLEST < value && value < PAST_LARGEST)
}

/// 0: fine; 1: a float might stand for an integer out of range; 2: nests deeper than `max_depth`.
#[pyfunction]
pub fn json_shape(value: &Bound<'_, PyAny>, max_depth: usize) -> u8 {
    let mut found_suspect = false;
    if walk(value, 1, max_depth, &mut found_suspect) {
        2
    } else {
        u8::from(found_suspect)
    }
}

/// True if a container at `depth` or below lies past `max_depth`.
fn walk(
    value: &Bound<'_, PyAny>,
    depth: usize,
    max_depth: usize,
    found_suspect: &mut bool,
) -> bool {
    if let Ok(dict) = value.cast_exact::<PyDict>() {
        if depth > max_depth {
            return true;
        }
        for (_, child) in dict.iter() {
            if walk(&child, depth + 1, max_depth, found_suspect) {
                return true;
            }
        }
    } else if let Ok(list) = value.cast_exact::<PyList>() {
        if depth > max_depth {
            return true;
        }
        for child in list.iter() {
            if walk(&child, depth + 1, max_depth, found_suspect) {
                return true;
            }
        }
    } else if !*found_suspect {
        if let Ok(float) = value.cast_exact::<PyFloat>() {
            *found_suspect = suspect(float.value());
        }
    }
    false
}
