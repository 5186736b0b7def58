//! Permission scopes (DESIGN.md §3, §7 "Scopes and classes").

use std::collections::BTreeSet;

use keygate_exchanges::EndpointClass;
use serde::{Deserialize, Serialize};

/// One permission a credential or connection grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Trade,
    Withdraw,
    Transfer,
    SubAccount,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Trade,
        Scope::Withdraw,
        Scope::Transfer,
        Scope::SubAccount,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Trade => "trade",
            Scope::Withdraw => "withdraw",
            Scope::Transfer => "transfer",
            Scope::SubAccount => "sub_account",
        }
    }

    /// The scope an endpoint class needs. `None` for `Public` (no scope) and for
    /// `Manage`/`Unknown`, which need an explicit flag and every scope (see `evaluate`).
    pub fn for_class(class: EndpointClass) -> Option<Scope> {
        match class {
            EndpointClass::Read => Some(Scope::Read),
            EndpointClass::Trade => Some(Scope::Trade),
            EndpointClass::Withdraw => Some(Scope::Withdraw),
            EndpointClass::Transfer => Some(Scope::Transfer),
            EndpointClass::SubAccount => Some(Scope::SubAccount),
            EndpointClass::Public | EndpointClass::Manage | EndpointClass::Unknown => None,
        }
    }
}

/// A set of scopes; serialised as a sorted JSON list (`["read","trade"]`). Empty by default:
/// nothing but public endpoints is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    pub fn empty() -> Self {
        ScopeSet::default()
    }

    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn insert(&mut self, scope: Scope) -> bool {
        self.0.insert(scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        self.0.intersection(&other.0).copied().collect()
    }

    pub fn contains_all(&self, other: &ScopeSet) -> bool {
        other.0.is_subset(&self.0)
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        ScopeSet(iter.into_iter().collect())
    }
}

/// The scopes a call through a connection has: the credential's scopes, narrowed by the
/// connection's when the connection restricts them (`None` = no further restriction).
pub fn scopes_for_connection(credential: &ScopeSet, connection: Option<&ScopeSet>) -> ScopeSet {
    match connection {
        Some(conn) => credential.intersection(conn),
        None => credential.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_narrows() {
        let cred: ScopeSet = [Scope::Read, Scope::Trade, Scope::Withdraw]
            .into_iter()
            .collect();
        let conn: ScopeSet = [Scope::Read, Scope::Trade, Scope::Transfer]
            .into_iter()
            .collect();
        let eff = scopes_for_connection(&cred, Some(&conn));
        assert_eq!(eff, [Scope::Read, Scope::Trade].into_iter().collect());
        assert_eq!(scopes_for_connection(&cred, None), cred);
        assert!(scopes_for_connection(&cred, Some(&ScopeSet::empty())).is_empty());
    }

    #[test]
    fn serde_is_snake_case_list() {
        let s: ScopeSet = [Scope::SubAccount, Scope::Read].into_iter().collect();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"["read","sub_account"]"#);
        let back: ScopeSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<ScopeSet>(r#"["admin"]"#).is_err());
    }

    #[test]
    fn class_scopes() {
        assert_eq!(
            Scope::for_class(EndpointClass::SubAccount),
            Some(Scope::SubAccount)
        );
        assert_eq!(Scope::for_class(EndpointClass::Public), None);
        assert_eq!(Scope::for_class(EndpointClass::Manage), None);
        assert!(ScopeSet::all().contains_all(&ScopeSet::all()));
        for s in Scope::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
