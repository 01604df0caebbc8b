//! Per-tenant string interning: accounts, groups, sources, custom event types and identity kinds
//! become small integers so profile state stays compact (see PERF.md).

use rustc_hash::FxHashMap;

/// Strings ↔ dense ids. Id 0 is reserved for "none / empty".
#[derive(Debug, Default, Clone)]
pub struct Interner {
    by_name: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    pub fn new() -> Interner {
        Interner { by_name: FxHashMap::default(), names: vec!["".into()] }
    }

    pub fn intern(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        if let Some(id) = self.by_name.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.by_name.insert(name.into(), id);
        id
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        if name.is_empty() {
            return Some(0);
        }
        self.by_name.get(name).copied()
    }

    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map(|s| &**s).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.names.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().enumerate().skip(1).map(|(i, s)| (i as u32, &**s))
    }
}
