//! One pass over a body that reads only what a plan needs: the plan's JSON
//! pointers form a trie, the body is deserialized against it, and only the
//! values at its leaves are built (as `serde_json::Value`s); every other
//! value is skipped, checked as `serde_json::Value` would check it (see
//! `Skip`). This replaces parsing the whole body into a `Value` and
//! resolving each pointer in it, which allocates every key and value and a
//! string per pointer token. Both give the same answer: `Paths::from_value`
//! is the reference a property test and the fuzz target hold it to.

use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The pointers a plan reads, as a trie of reference tokens. Each distinct
/// pointer has a slot; `extract` fills the slots of one body.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    root: Node,
    slots: usize,
    /// A pointer to the whole document (""): read through a `Value`.
    whole: Option<usize>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    slot: Option<usize>,
    children: Vec<Child>,
}

#[derive(Debug, Clone)]
struct Child {
    token: String,
    /// The token as an array index, as RFC 6901 allows one.
    index: Option<usize>,
    node: Node,
}

/// The reference tokens of a pointer, unescaped (`~1` is `/`, `~0` is `~`).
pub fn tokens(pointer: &str) -> impl Iterator<Item = String> + '_ {
    pointer
        .split('/')
        .skip(1)
        .map(|token| token.replace("~1", "/").replace("~0", "~"))
}

/// An array index as `serde_json::Value::pointer` reads one: digits, no
/// leading zero (but "0" itself), no sign.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() > 1) {
        return None;
    }
    token.parse().ok()
}

impl Paths {
    /// The slot of `pointer`, added if new.
    pub fn add(&mut self, pointer: &str) -> usize {
        if pointer.is_empty() {
            let next = self.slots;
            let slot = *self.whole.get_or_insert(next);
            if slot == next {
                self.slots += 1;
            }
            return slot;
        }
        let mut node = &mut self.root;
        for token in tokens(pointer) {
            let position = match node.children.iter().position(|c| c.token == token) {
                Some(position) => position,
                None => {
                    node.children.push(Child {
                        index: array_index(&token),
                        token,
                        node: Node::default(),
                    });
                    node.children.len() - 1
                }
            };
            node = &mut node.children[position].node;
        }
        match node.slot {
            Some(slot) => slot,
            None => {
                node.slot = Some(self.slots);
                self.slots += 1;
                self.slots - 1
            }
        }
    }

    /// The values at every slot of a body that is a JSON object; None when
    /// it is not UTF-8, not JSON or not an object (the caller then asks a
    /// `Value` why).
    pub fn extract(&self, body: &[u8]) -> Option<Vec<Option<Value>>> {
        if self.whole.is_some() {
            return None;
        }
        // serde_json checks the strings it returns, not those it skips.
        let text = std::str::from_utf8(body).ok()?;
        let mut slots = vec![None; self.slots];
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let seed = NodeSeed {
            node: &self.root,
            out: &mut slots,
            top: true,
        };
        seed.deserialize(&mut deserializer).ok()?;
        deserializer.end().ok()?;
        Some(slots)
    }

    /// The same slots read from a parsed body (the reference, and the
    /// way for a pointer to the whole document).
    pub fn from_value(&self, body: &Value) -> Vec<Option<Value>> {
        let mut slots = vec![None; self.slots];
        if let Some(slot) = self.whole {
            slots[slot] = Some(body.clone());
        }
        fill(&self.root, body, &mut slots);
        slots
    }
}

fn fill(node: &Node, value: &Value, out: &mut [Option<Value>]) {
    if let Some(slot) = node.slot {
        out[slot] = Some(value.clone());
    }
    for child in &node.children {
        let next = match value {
            Value::Object(map) => map.get(&child.token),
            Value::Array(items) => child.index.and_then(|i| items.get(i)),
            _ => None,
        };
        if let Some(next) = next {
            fill(&child.node, next, out);
        }
    }
}

/// Empties the slots under a node: a repeated key counts by its last
/// value, as in `Value`, so what an earlier one set must not survive.
fn clear(node: &Node, out: &mut [Option<Value>]) {
    if let Some(slot) = node.slot {
        out[slot] = None;
    }
    for child in &node.children {
        clear(&child.node, out);
    }
}

struct NodeSeed<'a> {
    node: &'a Node,
    out: &'a mut Vec<Option<Value>>,
    /// The document itself: only an object is read.
    top: bool,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        clear(self.node, self.out);
        if self.node.slot.is_some() {
            // A leaf (or a leaf with pointers below it): build its value.
            let value = <Value as serde::Deserialize>::deserialize(deserializer)?;
            fill(self.node, &value, self.out);
            return Ok(());
        }
        if self.top {
            return deserializer.deserialize_map(self);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let children = &self.node.children;
        while let Some(found) = map.next_key_seed(KeySeed(children))? {
            match found.map(|position| &children[position]) {
                Some(child) => map.next_value_seed(NodeSeed {
                    node: &child.node,
                    out: &mut *self.out,
                    top: false,
                })?,
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            let child = self.node.children.iter().find(|c| c.index == Some(index));
            let more = match child {
                Some(child) => seq
                    .next_element_seed(NodeSeed {
                        node: &child.node,
                        out: &mut *self.out,
                        top: false,
                    })?
                    .is_some(),
                None => seq.next_element::<Skip>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// An object key, matched against a node's children without copying it:
/// the position of the child it names, if any.
struct KeySeed<'a>(&'a [Child]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|child| child.token == key))
    }
}

/// Any JSON value, read and dropped. Unlike serde's `IgnoredAny`, which
/// serde_json skips without looking, numbers are converted, so a number out
/// of range (`1e999`) fails here as it does in `serde_json::Value`.
pub struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl Skip {
    /// Skips the rest of an array being visited.
    pub fn visit_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Skip, A::Error> {
        SkipVisitor.visit_seq(seq)
    }

    /// Skips the rest of an object being visited.
    pub fn visit_map<'de, A: MapAccess<'de>>(map: A) -> Result<Skip, A::Error> {
        SkipVisitor.visit_map(map)
    }
}

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn paths(pointers: &[&str]) -> Paths {
        let mut paths = Paths::default();
        for pointer in pointers {
            paths.add(pointer);
        }
        paths
    }

    #[test]
    fn only_the_leaves_are_read_and_a_repeated_key_counts_by_its_last_value() {
        let paths = paths(&["/user/email", "/user/id", "/items/1", "/a~1b"]);
        let body = br#"{"user": {"email": "x", "id": 1}, "user": {"id": 2}, "items": [0, {"k": true}], "a/b": null, "big": [1, 2, {"z": "skip"}]}"#;
        let slots = paths.extract(body).unwrap();
        assert_eq!(
            slots,
            vec![
                None,
                Some(serde_json::json!(2)),
                Some(serde_json::json!({"k": true})),
                Some(Value::Null)
            ]
        );
    }

    #[test]
    fn what_is_not_an_object_of_json_is_left_to_the_caller() {
        let paths = paths(&["/a"]);
        for body in [
            &b"[1]"[..],
            b"\"x\"",
            b"nope",
            b"{\"a\": 1e999}",
            b"{\"b\": \"\xff\"}",
            b"{} {}",
        ] {
            assert_eq!(
                paths.extract(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| serde_json::json!(n)),
            "[a-c]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-c]{1}", inner), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn extracting_agrees_with_reading_a_parsed_value(body in json()) {
            let paths = paths(&["/a", "/a/b", "/b/0", "/b/1/c", "/c/a/b", "/a/c"]);
            let text = serde_json::to_vec(&body).unwrap();
            match &body {
                Value::Object(_) => prop_assert_eq!(paths.extract(&text), Some(paths.from_value(&body))),
                _ => prop_assert_eq!(paths.extract(&text), None),
            }
        }
    }
}
