//! Which recordings are transcribed, and in which language: a default, overridden per route,
//! overridden in turn per record policy (the policy that selected the recording, named in its
//! decision). Each field is overridden on its own: a policy may switch transcription on and
//! leave the language to its route.
//!
//! ```
//! let s: transcript::Selection = serde_json::from_value(serde_json::json!({
//!     "transcribe": false,
//!     "language": "en",
//!     "routes": { "de-pbx": { "transcribe": true, "language": "de" } },
//!     "policies": { "complaints": { "transcribe": true } },
//! })).unwrap();
//! assert_eq!(s.decide("de-pbx", None).as_deref(), Some("de"));
//! assert_eq!(s.decide("pbx", Some("complaints")).as_deref(), Some("en"));
//! assert_eq!(s.decide("pbx", None), None);
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// An override for one route or policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub transcribe: Option<bool>,
    pub language: Option<String>,
}

/// The selection (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Selection {
    /// Transcribe recordings that no rule decides for.
    pub transcribe: bool,
    /// The language when no rule names one (BCP 47).
    pub language: String,
    /// By route name.
    pub routes: HashMap<String, Rule>,
    /// By record policy name.
    pub policies: HashMap<String, Rule>,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            transcribe: true,
            language: "en".into(),
            routes: HashMap::new(),
            policies: HashMap::new(),
        }
    }
}

impl Selection {
    /// The language to transcribe a recording of `route`, selected by record policy
    /// `policy`, in; `None` when it is not transcribed.
    pub fn decide(&self, route: &str, policy: Option<&str>) -> Option<String> {
        let r = self.routes.get(route);
        let p = policy.and_then(|p| self.policies.get(p));
        let transcribe = p
            .and_then(|x| x.transcribe)
            .or_else(|| r.and_then(|x| x.transcribe))
            .unwrap_or(self.transcribe);
        let language = p
            .and_then(|x| x.language.as_ref())
            .or_else(|| r.and_then(|x| x.language.as_ref()))
            .unwrap_or(&self.language);
        transcribe.then(|| language.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_beat_routes_beat_the_default_field_by_field() {
        let mut s = Selection::default();
        s.routes.insert(
            "quiet".into(),
            Rule {
                transcribe: Some(false),
                language: Some("de".into()),
            },
        );
        s.policies.insert(
            "qa".into(),
            Rule {
                transcribe: Some(true),
                language: None,
            },
        );
        assert_eq!(s.decide("pbx", None).as_deref(), Some("en"));
        assert_eq!(s.decide("quiet", None), None);
        assert_eq!(s.decide("quiet", Some("qa")).as_deref(), Some("de"));
        assert_eq!(s.decide("quiet", Some("other")), None);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<Selection, _> = serde_json::from_str(r#"{"transcrib": true}"#);
        assert!(r.is_err());
    }
}
