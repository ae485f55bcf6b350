//! The names of a pipeline's declared states and their kinds.
//!
//! Plugins address state by name; the backends by a small id. The catalog is
//! the one place that maps between the two, so a name keeps the same id (and
//! kind) for the life of a pipeline, across plugin versions.

use rustc_hash::FxHashMap;

pub type StateId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    Value,
    Map,
    List,
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StateKind::Value => "value",
            StateKind::Map => "map",
            StateKind::List => "list",
        })
    }
}

#[derive(Debug, Default, Clone)]
pub struct StateCatalog {
    by_name: FxHashMap<String, (StateId, StateKind)>,
    names: Vec<(String, StateKind)>,
}

impl StateCatalog {
    /// The id of `name`, declaring it on first use. A name keeps its first kind.
    pub fn declare(&mut self, name: &str, kind: StateKind) -> Result<StateId, String> {
        if let Some(&(id, existing)) = self.by_name.get(name) {
            return if existing == kind {
                Ok(id)
            } else {
                Err(format!(
                    "state {name:?} is a {existing} state; it cannot be declared as a {kind} state"
                ))
            };
        }
        let id = self.names.len() as StateId;
        self.by_name.insert(name.to_owned(), (id, kind));
        self.names.push((name.to_owned(), kind));
        Ok(id)
    }

    /// How many states are declared; ids are `0..len`.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, id: StateId) -> &str {
        &self.names[id as usize].0
    }

    pub fn kind(&self, id: StateId) -> StateKind {
        self.names[id as usize].1
    }

    /// Every declared state, in id order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, StateKind)> {
        self.names.iter().map(|(name, kind)| (name.as_str(), *kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_id_and_kind() {
        let mut catalog = StateCatalog::default();
        let a = catalog.declare("window", StateKind::Value).unwrap();
        let b = catalog.declare("seen", StateKind::Map).unwrap();
        assert_ne!(a, b);
        assert_eq!(catalog.declare("window", StateKind::Value).unwrap(), a);
        let err = catalog.declare("window", StateKind::List).unwrap_err();
        assert!(err.contains("value state"), "{err}");
        assert_eq!(catalog.name(b), "seen");
        assert_eq!(catalog.kind(b), StateKind::Map);
    }
}
