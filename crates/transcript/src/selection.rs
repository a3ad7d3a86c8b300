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
        self.decide_for(route, policy.as_slice())
    }

    /// [`Selection::decide`] for a recording that several record policies recorded (a
    /// decision log names each): it is transcribed when one of their rules asks for it, not
    /// when one says no and none yes; the language is that of the first policy naming one.
    /// Policies without a rule leave the decision to the route.
    pub fn decide_for(&self, route: &str, policies: &[&str]) -> Option<String> {
        let r = self.routes.get(route);
        let rules: Vec<&Rule> = policies
            .iter()
            .filter_map(|p| self.policies.get(*p))
            .collect();
        let by_policy = if rules.iter().any(|x| x.transcribe == Some(true)) {
            Some(true)
        } else if rules.iter().any(|x| x.transcribe == Some(false)) {
            Some(false)
        } else {
            None
        };
        let transcribe = by_policy
            .or_else(|| r.and_then(|x| x.transcribe))
            .unwrap_or(self.transcribe);
        let language = rules
            .iter()
            .find_map(|x| x.language.as_ref())
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
    fn of_several_policies_one_yes_wins_and_the_first_language() {
        let mut s = Selection {
            transcribe: false,
            ..Selection::default()
        };
        let rule = |t: Option<bool>, l: Option<&str>| Rule {
            transcribe: t,
            language: l.map(str::to_string),
        };
        s.policies
            .insert("no".into(), rule(Some(false), Some("fr")));
        s.policies.insert("yes".into(), rule(Some(true), None));
        s.policies.insert("de".into(), rule(None, Some("de")));
        s.routes.insert("on".into(), rule(Some(true), Some("nl")));
        assert_eq!(s.decide_for("pbx", &["no", "yes"]).as_deref(), Some("fr"));
        assert_eq!(s.decide_for("on", &["no"]), None);
        assert_eq!(
            s.decide_for("on", &["de", "unknown"]).as_deref(),
            Some("de")
        );
        assert_eq!(s.decide_for("on", &[]).as_deref(), Some("nl"));
        assert_eq!(s.decide_for("pbx", &["unknown"]), None);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<Selection, _> = serde_json::from_str(r#"{"transcrib": true}"#);
        assert!(r.is_err());
    }
}
