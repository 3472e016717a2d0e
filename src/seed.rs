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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event;

    #[test]
    fn junk_share_is_exact_and_labels_match_the_parser() {
        let messages = generate(200, 0.1, 7);
        assert_eq!(messages.len(), 200);
        assert_eq!(messages.iter().filter(|m| !m.valid).count(), 20);
        for message in &messages {
            assert_eq!(
                event::parse(message.body.as_bytes()).is_ok(),
                message.valid,
                "label disagrees with parser"
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
        let ids: Vec<String> = generate(60, 0.0, 1)
            .iter()
            .map(|m| event::parse(m.body.as_bytes()).unwrap().device_id)
            .collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert!(distinct.len() < ids.len());
    }
}
