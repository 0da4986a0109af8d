//! Located problems in YAML files, shared by scenario, bench and manifest files: the
//! [`Problem`] type (`file:line:col: message`), finding the position of the value at a path
//! ([`locate`], [`locate_or_parent`], [`located`]), a key written twice ([`duplicate_key`]),
//! serde_yaml's own positions moved to the front ([`strip_location`]), and "did you mean"
//! hints ([`with_hint`], [`closest`]).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One problem in a scenario file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in one file (at least one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<Problem>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// serde_yaml says " at line L column C" (at the end or mid-sentence); the position goes in
/// front instead.
pub fn strip_location(message: &str) -> String {
    let Some(i) = message.find(" at line ") else {
        return message.to_string();
    };
    let rest = &message[i + " at line ".len()..];
    let Some(col) = rest.find(" column ") else {
        return message.to_string();
    };
    let after = &rest[col + " column ".len()..];
    let digits = after.chars().take_while(char::is_ascii_digit).count();
    format!("{}{}", &message[..i], &after[digits..])
}

/// For "unknown variant `x`, expected one of `a`, `b`" (and unknown fields): the closest
/// valid name.
pub fn with_hint(message: &str) -> String {
    let unknown = ["unknown variant `", "unknown field `"]
        .iter()
        .find_map(|p| message.find(p).map(|i| i + p.len()));
    let Some(start) = unknown else {
        if message.contains("expected newtype variant")
            || message.contains("expected struct variant")
        {
            return format!(
                "{message} (this one takes settings: write `name: {{...}}`, e.g. `power_cut: {{restore_after_ms: 500}}`)"
            );
        }
        if message.contains("expected unit variant") {
            return format!("{message} (this one takes no settings: write just its name)");
        }
        return message.to_string();
    };
    let Some(len) = message[start..].find('`') else {
        return message.to_string();
    };
    let wrong = &message[start..start + len];
    let rest = &message[start + len + 1..];
    let valid: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    match closest(wrong, &valid) {
        Some(best) => format!("{message} (did you mean `{best}`?)"),
        None => message.to_string(),
    }
}

/// The valid name nearest to `wrong` by edit distance, if it is near enough to be a typo.
pub fn closest<'a>(wrong: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (edit_distance(wrong, v), *v))
        .min()
        .filter(|(d, v)| *d <= 2.max(v.len() / 3))
        .map(|(_, v)| v)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// `["faults", "0", "do"]` → `faults[0].do`.
pub fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// The (line, column) of the value at `path`, or of its nearest parent in the file (a
/// problem with a default, a field the file leaves out, goes to the mapping that omits it).
pub fn locate_or_parent(text: &str, path: &[String]) -> (usize, usize) {
    (0..=path.len())
        .rev()
        .find_map(|n| locate(text, &path[..n]))
        .unwrap_or((1, 1))
}

/// A semantic problem of the value at `path`, located in `text` ([`locate_or_parent`]) and
/// named by its dotted path: `FILE:LINE:COL: a.b: message`.
pub fn located(file: &str, text: &str, path: &[String], message: &str) -> Problem {
    let (line, column) = locate_or_parent(text, path);
    Problem {
        file: file.into(),
        line,
        column,
        message: format!("{}: {message}", dotted(path)),
    }
}

/// A key written twice in one mapping, at its second occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The path of the mapping.
    pub path: Vec<String>,
    pub key: String,
    pub line: usize,
    pub column: usize,
}

impl DuplicateKey {
    /// `mapping.path: duplicate field `key`` (no path at the top level), as serde words it.
    pub fn message(&self) -> String {
        if self.path.is_empty() {
            format!("duplicate field `{}`", self.key)
        } else {
            format!("{}: duplicate field `{}`", dotted(&self.path), self.key)
        }
    }

    pub fn problem(&self, file: &str) -> Problem {
        Problem {
            file: file.into(),
            line: self.line,
            column: self.column,
            message: self.message(),
        }
    }
}

/// The first key that appears twice in one mapping anywhere in `text`. Serde reports a
/// duplicate struct field at the start of its mapping (1:1 at the top level) and lets a
/// duplicate in a free map (`env`, `images`) silently overwrite the first; this pass finds
/// both, at the second key. Text that is not YAML has none (the serde pass reports it).
pub fn duplicate_key(text: &str) -> Option<DuplicateKey> {
    let found = std::cell::RefCell::new(None);
    let seed = Dups {
        path: Vec::new(),
        found: &found,
    };
    match seed.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => {
            let (path, key) = found.into_inner()?;
            let loc = e.location()?;
            Some(DuplicateKey {
                path,
                key,
                line: loc.line(),
                column: loc.column(),
            })
        }
        _ => None,
    }
}

type DupSlot = std::cell::RefCell<Option<(Vec<String>, String)>>;

/// Walks every mapping and sequence; fails at the first key seen twice in one mapping.
struct Dups<'a> {
    path: Vec<String>,
    found: &'a DupSlot,
}

impl<'de> DeserializeSeed<'de> for Dups<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Dups<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key_seed(Key {
            seen: &mut seen,
            path: &self.path,
            found: self.found,
        })? {
            let mut path = self.path.clone();
            path.push(key);
            map.next_value_seed(Dups {
                path,
                found: self.found,
            })?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let mut path = self.path.clone();
            path.push(i.to_string());
            if seq
                .next_element_seed(Dups {
                    path,
                    found: self.found,
                })?
                .is_none()
            {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// A mapping key as text; fails (and records it) when the mapping had it already.
struct Key<'a, 'b> {
    seen: &'b mut std::collections::BTreeSet<String>,
    path: &'b [String],
    found: &'a DupSlot,
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl Key<'_, '_> {
    fn key<E: de::Error>(self, key: String) -> Result<String, E> {
        if self.seen.insert(key.clone()) {
            return Ok(key);
        }
        *self.found.borrow_mut() = Some((self.path.to_vec(), key));
        Err(E::custom(FOUND))
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar key")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        self.key(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        self.key(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        self.key(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        self.key(v.to_string())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.key(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        self.key("~".to_string())
    }
}

/// The (line, column) of the value at `path` in `text`.
pub fn locate(text: &str, path: &[String]) -> Option<(usize, usize)> {
    let seed = Locate { path };
    match seed.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

const FOUND: &str = "\u{0}found";

/// Walks the document to `path` and fails there: serde_yaml puts the position on the error.
struct Locate<'a> {
    path: &'a [String],
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        while let Some(key) = map.next_key::<String>()? {
            if &key == first {
                map.next_value_seed(Locate { path: rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let index: usize = first.parse().unwrap_or(usize::MAX);
        let mut i = 0;
        loop {
            let more = if i == index {
                seq.next_element_seed(Locate { path: rest })?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
}

impl Locate<'_> {
    fn leaf<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}
