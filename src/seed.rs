//! Generated login events for demos, tests and benchmarks: realistic valid
//! events (UUID users, SSN-shaped device ids, IPv4 and some IPv6 written in
//! varied forms, all three version shapes, null locales) with deliberate
//! repeats so duplicate queries find something, plus a chosen share of junk
//! covering every quarantine reason.

use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::json;

/// One generated message body and whether it is a valid event.
#[derive(Debug, Clone)]
pub struct SeedMessage {
    /// The body to send.
    pub body: String,
    /// True for a valid login event, false for junk.
    pub valid: bool,
}

/// `count` messages, `round(count * bad_ratio)` of them junk, shuffled.
pub fn generate(count: usize, bad_ratio: f64, rng_seed: u64) -> Vec<SeedMessage> {
    let mut rng = SmallRng::seed_from_u64(rng_seed);
    let bad = ((count as f64) * bad_ratio.clamp(0.0, 1.0)).round() as usize;
    let pool = Pools::new(&mut rng, count);
    let mut messages: Vec<SeedMessage> = (0..count)
        .map(|index| {
            if index < bad {
                SeedMessage {
                    body: junk(&mut rng, index, &pool),
                    valid: false,
                }
            } else {
                SeedMessage {
                    body: valid_event(&mut rng, &pool).to_string(),
                    valid: true,
                }
            }
        })
        .collect();
    messages.shuffle(&mut rng);
    messages
}

/// Shared device ids and addresses, so some repeat across events.
struct Pools {
    device_ids: Vec<String>,
    ips: Vec<String>,
}

impl Pools {
    fn new(rng: &mut SmallRng, count: usize) -> Self {
        let size = (count / 3).max(1);
        Pools {
            device_ids: (0..size).map(|_| device_id(rng)).collect(),
            ips: (0..size).map(|_| ip(rng)).collect(),
        }
    }

    fn device_id(&self, rng: &mut SmallRng) -> String {
        self.device_ids.choose(rng).cloned().unwrap_or_default()
    }

    fn ip(&self, rng: &mut SmallRng) -> String {
        self.ips.choose(rng).cloned().unwrap_or_default()
    }
}

fn device_id(rng: &mut SmallRng) -> String {
    format!(
        "{:03}-{:02}-{:04}",
        rng.random_range(1..900),
        rng.random_range(1..100),
        rng.random_range(1..10_000)
    )
}

fn ip(rng: &mut SmallRng) -> String {
    if rng.random_bool(0.1) {
        let groups: Vec<String> = (0..3)
            .map(|_| format!("{:x}", rng.random::<u16>()))
            .collect();
        // Uppercase on purpose: canonicalization must make it equal to lowercase.
        format!("2001:DB8:{}::{}", groups[..2].join(":"), groups[2]).to_uppercase()
    } else {
        format!(
            "{}.{}.{}.{}",
            rng.random_range(1..224),
            rng.random::<u8>(),
            rng.random::<u8>(),
            rng.random_range(1..255)
        )
    }
}

fn uuid(rng: &mut SmallRng) -> String {
    let bytes: [u8; 16] = rng.random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn valid_event(rng: &mut SmallRng, pool: &Pools) -> serde_json::Value {
    let version = match rng.random_range(0..3) {
        0 => format!(
            "{}.{}.{}",
            rng.random_range(0..6),
            rng.random_range(0..10),
            rng.random_range(0..10)
        ),
        1 => format!("{}.{:02}", rng.random_range(0..3), rng.random_range(0..100)),
        _ => format!("{}.{}", rng.random_range(0..6), rng.random_range(0..10)),
    };
    let locales = ["RU", "US", "DE", "FR", "BR", "IN", "JP", "PH", "ES", "CN"];
    let locale = if rng.random_bool(0.1) {
        serde_json::Value::Null
    } else {
        locales.choose(rng).copied().unwrap_or("US").into()
    };
    json!({
        "user_id": uuid(rng),
        "app_version": version,
        "device_type": if rng.random_bool(0.5) { "android" } else { "ios" },
        "ip": pool.ip(rng),
        "locale": locale,
        "device_id": pool.device_id(rng),
    })
}

/// One junk body; `index` walks through the kinds so each appears.
fn junk(rng: &mut SmallRng, index: usize, pool: &Pools) -> String {
    let mut event = valid_event(rng, pool);
    let object = event.as_object_mut().expect("valid_event builds an object");
    match index % 10 {
        0 => return "this is not json".into(),
        1 => return r#"{"foo": "x", "bar": "1"}"#.into(),
        2 => {
            object.remove("device_id");
        }
        3 => {
            object.insert("ip".into(), "999.1.2.3".into());
        }
        4 => {
            object.insert("app_version".into(), "latest".into());
        }
        5 => {
            object.insert("device_type".into(), "x".repeat(40).into());
        }
        6 => {
            object.insert("app_version".into(), 3.into());
        }
        7 => {
            object.insert("user_id".into(), serde_json::Value::Null);
        }
        8 => {
            object.insert("locale".into(), "R\u{0}U".into());
        }
        _ => return format!("{} trailing", event),
    }
    event.to_string()
}

/// `count` bodies for a contract plan, spread over its contracts,
/// `round(count * bad_ratio)` of them junk (not JSON, an unknown type, a
/// required field missing), shuffled. Each generated body is checked by the
/// plan's own parser: a column whose rules generated values cannot meet
/// (a `pattern`) needs `examples`, and the error says so.
pub fn generate_by_contract(
    plan: &crate::contract::Plan,
    count: usize,
    bad_ratio: f64,
    rng_seed: u64,
) -> Result<Vec<SeedMessage>, crate::error::ConfigError> {
    let mut rng = SmallRng::seed_from_u64(rng_seed);
    let bad = ((count as f64) * bad_ratio.clamp(0.0, 1.0)).round() as usize;
    let pool = (count / 3).max(1);
    let mut messages = Vec::with_capacity(count);
    for index in 0..count {
        let contract = &plan.contracts[index % plan.contracts.len()];
        let person = rng.random_range(0..pool);
        let mut body = contract_body(&mut rng, contract, person);
        let valid = index >= bad;
        if !valid {
            body = contract_junk(&mut rng, contract, body, index);
        } else {
            check_sample(plan, contract, &body)?;
        }
        messages.push(SeedMessage {
            body: body.to_string(),
            valid,
        });
    }
    messages.shuffle(&mut rng);
    Ok(messages)
}

/// A valid body of `contract`; `person` picks from a pool so PII repeats.
fn contract_body(
    rng: &mut SmallRng,
    contract: &crate::contract::Contract,
    person: usize,
) -> serde_json::Value {
    let mut body = json!({});
    if let Some(route) = &contract.route {
        set_pointer(&mut body, &route.pointer, json!(route.equals));
    }
    for column in &contract.columns {
        if let crate::contract::ColumnSource::Body(pointer) = &column.source {
            if !column.required && rng.random_bool(0.1) {
                continue;
            }
            set_pointer(&mut body, pointer, sample_value(rng, column, person));
        }
    }
    body
}

/// A junk variant of a valid body: every third not JSON at all, then an
/// unknown type (routed plans) or a required field missing.
fn contract_junk(
    rng: &mut SmallRng,
    contract: &crate::contract::Contract,
    mut body: serde_json::Value,
    index: usize,
) -> serde_json::Value {
    if index.is_multiple_of(3) {
        return json!(format!("not json {}", rng.random::<u32>()));
    }
    if let (Some(route), 1) = (&contract.route, index % 3) {
        set_pointer(&mut body, &route.pointer, json!("no-such-type"));
        return body;
    }
    let required = contract
        .columns
        .iter()
        .find_map(|column| match &column.source {
            crate::contract::ColumnSource::Body(pointer) if column.required => Some(pointer),
            _ => None,
        });
    if let Some(pointer) = required {
        set_pointer(&mut body, pointer, serde_json::Value::Null);
    }
    body
}

/// Generated values must pass the plan itself: else the seed would send
/// "valid" events that are quarantined.
fn check_sample(
    plan: &crate::contract::Plan,
    contract: &crate::contract::Contract,
    body: &serde_json::Value,
) -> Result<(), crate::error::ConfigError> {
    let facts = crate::contract::SqsFacts {
        message_id: "seed",
        sent_ms: None,
        first_receive_ms: None,
        attributes: &[],
    };
    match crate::contract::parse(plan, body.to_string().as_bytes(), facts) {
        Ok(_) => Ok(()),
        Err(rejection) => {
            let column = rejection
                .column
                .map_or("-".to_string(), |c| contract.columns[c].name.clone());
            Err(crate::error::ConfigError(format!(
                "veil seed cannot generate a valid value for column {column} of contract {} ({}): \
                 give the column `examples: [...]` that pass its rules",
                contract.name,
                rejection.reason.code()
            )))
        }
    }
}

fn sample_value(
    rng: &mut SmallRng,
    column: &crate::contract::Column,
    person: usize,
) -> serde_json::Value {
    use crate::contract::ColumnType as T;
    if !column.examples.is_empty() {
        let example = &column.examples[person % column.examples.len()];
        return match column.column_type {
            T::Integer | T::Bigint | T::Numeric if !column.coerce => {
                serde_json::from_str(example).unwrap_or_else(|_| json!(example))
            }
            T::Boolean if !column.coerce => json!(example == "true"),
            _ => json!(example),
        };
    }
    if let Some(allowed) = &column.allowed {
        return json!(allowed[person % allowed.len()]);
    }
    let lower = column.min.unwrap_or(0.0).max(-1e9) as i64;
    let upper = column.max.unwrap_or(1000.0).min(1e9) as i64;
    let number = lower + (person as i64) % (upper - lower + 1).max(1);
    let text = |value: String| json!(value);
    match column.column_type {
        T::Text => {
            let hint = column
                .pii
                .as_ref()
                .map_or(column.name.as_str(), |pii| pii.domain.as_str());
            let value = if hint.contains("email") {
                format!("person{person}@example.com")
            } else if hint.contains("phone") {
                format!("+1 555 01{:02}", person % 100)
            } else {
                format!("{}-{person}", column.name)
            };
            let limit = column
                .max_chars
                .unwrap_or(usize::MAX)
                .min(column.max_bytes.unwrap_or(usize::MAX));
            text(value.chars().take(limit).collect())
        }
        T::Integer | T::Bigint if column.coerce => text(number.to_string()),
        T::Integer | T::Bigint => json!(number),
        T::Numeric if column.coerce => text(format!("{number}.50")),
        T::Numeric => json!(number as f64 + 0.5),
        T::Boolean => json!(person.is_multiple_of(2)),
        T::Date => text(format!(
            "19{:02}-{:02}-{:02}",
            50 + person % 50,
            1 + person % 12,
            1 + person % 28
        )),
        T::Timestamptz => {
            text(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }
        T::Uuid => text(uuid(rng)),
        T::Ip => text(format!(
            "10.{}.{}.{}",
            person / 65_536 % 256,
            person / 256 % 256,
            person % 256
        )),
        T::VersionMajor => text(format!("{}.{}.0", person % 4, person % 10)),
        T::Jsonb => json!({"n": person}),
    }
}

/// Sets the value at a JSON pointer, making the objects on the way.
fn set_pointer(body: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
    let tokens: Vec<String> = crate::contract::extract::tokens(pointer).collect();
    let Some((last, path)) = tokens.split_last() else {
        return;
    };
    let mut node = body;
    for token in path {
        if !node.get(token).is_some_and(serde_json::Value::is_object) {
            node[token.as_str()] = json!({});
        }
        node = &mut node[token.as_str()];
    }
    node[last.as_str()] = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{self, Cell, SqsFacts};

    fn parsed(body: &str) -> Result<Vec<Cell>, contract::ContractRejection> {
        let facts = SqsFacts {
            message_id: "m",
            sent_ms: Some(1),
            first_receive_ms: None,
            attributes: &[],
        };
        contract::parse(&contract::builtin_login(), body.as_bytes(), facts).map(|e| e.cells)
    }

    #[test]
    fn junk_share_is_exact_and_labels_match_the_login_contract() {
        let messages = generate(200, 0.1, 7);
        assert_eq!(messages.len(), 200);
        assert_eq!(messages.iter().filter(|m| !m.valid).count(), 20);
        for message in &messages {
            assert_eq!(
                parsed(&message.body).is_ok(),
                message.valid,
                "label disagrees with the login contract"
            );
        }
    }

    #[test]
    fn same_seed_gives_same_messages() {
        let one: Vec<String> = generate(20, 0.2, 42).into_iter().map(|m| m.body).collect();
        let two: Vec<String> = generate(20, 0.2, 42).into_iter().map(|m| m.body).collect();
        assert_eq!(one, two);
    }

    #[test]
    fn device_ids_repeat_so_duplicates_exist() {
        // masked_device_id, before masking
        let ids: Vec<Option<String>> = generate(60, 0.0, 1)
            .iter()
            .map(|m| parsed(&m.body).unwrap().swap_remove(3).sql_text())
            .collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert!(distinct.len() < ids.len());
    }
}
