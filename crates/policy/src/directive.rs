//! Flow directives and consent as an IVR or PBX dialplan sends them.
//!
//! Header syntax (on INVITE, re-INVITE or INFO; the HTTP control API takes the same strings):
//!
//! ```text
//! X-Tapir-Record: start;type=ivr | stop;type=ivr      IVR-segment recording
//! X-Tapir-Record: start | start;type=call | stop      call recording
//! X-Tapir-Record: agent-only | do-not-record | pause | resume
//! X-Tapir-Record: statement-start;id=<id> | statement-stop
//! X-Tapir-Consent: granted | denied
//! ```
//!
//! Several directives may share one header, separated by commas, and apply in order. Names and
//! parameter names are case-insensitive; a statement id is kept as given.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::PolicyError;

/// What a flow (IVR script, dialplan, control API) asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "directive", rename_all = "snake_case")]
pub enum FlowDirective {
    /// Record the IVR segment; it ends when the agent answers.
    StartIvrRecording,
    StopIvrRecording,
    /// Record the call (the agent segment).
    StartCallRecording,
    StopCallRecording,
    /// Record the agent's channel only (the customer's stays silent).
    AgentOnly,
    /// Do not record this call; later flow starts are ignored (on-demand still wins).
    DoNotRecord,
    Pause,
    Resume,
    /// Start a recorded statement, a separate short recording; an empty id asks the policy to
    /// make one up.
    StatementStart {
        id: String,
    },
    /// Stop the open recorded statement.
    StatementStop,
}

impl fmt::Display for FlowDirective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowDirective::StartIvrRecording => f.write_str("start;type=ivr"),
            FlowDirective::StopIvrRecording => f.write_str("stop;type=ivr"),
            FlowDirective::StartCallRecording => f.write_str("start"),
            FlowDirective::StopCallRecording => f.write_str("stop"),
            FlowDirective::AgentOnly => f.write_str("agent-only"),
            FlowDirective::DoNotRecord => f.write_str("do-not-record"),
            FlowDirective::Pause => f.write_str("pause"),
            FlowDirective::Resume => f.write_str("resume"),
            FlowDirective::StatementStart { id } if id.is_empty() => f.write_str("statement-start"),
            FlowDirective::StatementStart { id } => write!(f, "statement-start;id={id}"),
            FlowDirective::StatementStop => f.write_str("statement-stop"),
        }
    }
}

impl FromStr for FlowDirective {
    type Err = PolicyError;

    /// Parses one directive (no commas).
    fn from_str(item: &str) -> Result<Self, PolicyError> {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("").to_ascii_lowercase();
        if name.is_empty() {
            return Err(PolicyError::BadDirective {
                input: item.to_owned(),
                why: "empty directive".to_owned(),
            });
        }
        let mut kind: Option<String> = None;
        let mut id: Option<String> = None;
        for param in parts {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            match k.as_str() {
                "type" if name == "start" || name == "stop" => {
                    kind = Some(v.to_ascii_lowercase());
                }
                "id" if name == "statement-start" => id = Some(v.to_owned()),
                _ => {
                    return Err(PolicyError::BadDirective {
                        input: item.to_owned(),
                        why: format!("unknown parameter {k:?} for {name:?}"),
                    })
                }
            }
        }
        let ivr = match kind.as_deref() {
            None | Some("call") => false,
            Some("ivr") => true,
            Some(other) => {
                return Err(PolicyError::BadDirective {
                    input: item.to_owned(),
                    why: format!("type must be ivr or call, not {other:?}"),
                })
            }
        };
        Ok(match name.as_str() {
            "start" if ivr => FlowDirective::StartIvrRecording,
            "start" => FlowDirective::StartCallRecording,
            "stop" if ivr => FlowDirective::StopIvrRecording,
            "stop" => FlowDirective::StopCallRecording,
            "agent-only" => FlowDirective::AgentOnly,
            "do-not-record" => FlowDirective::DoNotRecord,
            "pause" => FlowDirective::Pause,
            "resume" => FlowDirective::Resume,
            "statement-start" => FlowDirective::StatementStart {
                id: id.unwrap_or_default(),
            },
            "statement-stop" => FlowDirective::StatementStop,
            _ => {
                return Err(PolicyError::BadDirective {
                    input: item.to_owned(),
                    why: format!("unknown directive {name:?}"),
                })
            }
        })
    }
}

/// Parses an `X-Tapir-Record` header value: one or more directives separated by commas.
pub fn parse_record_header(value: &str) -> Result<Vec<FlowDirective>, PolicyError> {
    value.split(',').map(FlowDirective::from_str).collect()
}

/// The caller's answer to the recording question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    Granted,
    Denied,
}

impl FromStr for Consent {
    type Err = PolicyError;

    /// Parses an `X-Tapir-Consent` header value.
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "granted" => Ok(Consent::Granted),
            "denied" => Ok(Consent::Denied),
            _ => Err(PolicyError::BadConsent {
                input: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Consent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Consent::Granted => "granted",
            Consent::Denied => "denied",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_directive_and_round_trips() {
        let all = [
            FlowDirective::StartIvrRecording,
            FlowDirective::StopIvrRecording,
            FlowDirective::StartCallRecording,
            FlowDirective::StopCallRecording,
            FlowDirective::AgentOnly,
            FlowDirective::DoNotRecord,
            FlowDirective::Pause,
            FlowDirective::Resume,
            FlowDirective::StatementStart {
                id: "Stmt-7".into(),
            },
            FlowDirective::StatementStart { id: String::new() },
            FlowDirective::StatementStop,
        ];
        for d in all {
            assert_eq!(d.to_string().parse::<FlowDirective>().unwrap(), d);
        }
        assert_eq!(
            "START ; Type=IVR".parse::<FlowDirective>().unwrap(),
            FlowDirective::StartIvrRecording
        );
        assert_eq!(
            "start;type=call".parse::<FlowDirective>().unwrap(),
            FlowDirective::StartCallRecording
        );
    }

    #[test]
    fn header_lists_apply_in_order() {
        assert_eq!(
            parse_record_header("agent-only, start").unwrap(),
            vec![FlowDirective::AgentOnly, FlowDirective::StartCallRecording]
        );
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "begin",
            "start;type=queue",
            "pause;type=ivr",
            "start;id=1",
            "statement-start;foo=1",
            "start,",
        ] {
            let err = parse_record_header(bad).unwrap_err();
            assert!(
                matches!(err, PolicyError::BadDirective { .. }),
                "{bad}: {err}"
            );
        }
        assert_eq!(" Denied ".parse::<Consent>().unwrap(), Consent::Denied);
        assert_eq!("granted".parse::<Consent>().unwrap(), Consent::Granted);
        assert!("yes".parse::<Consent>().is_err());
    }
}
