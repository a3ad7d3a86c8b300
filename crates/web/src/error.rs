use thiserror::Error;

/// Why a page's input was refused (the binary answers 400 with the message on the page).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WebError {
    /// A search or filter parameter that does not parse; `message` names it.
    #[error("{message}")]
    BadParam { param: String, message: String },
    /// A form field that is missing or wrong.
    #[error("{field}: {reason}")]
    BadForm { field: String, reason: String },
    /// A field the form does not have.
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// Refused by the access rules (username, role fields, password policy).
    #[error("{0}")]
    Access(#[from] access::AccessError),
}

impl WebError {
    pub(crate) fn form(field: &str, reason: impl Into<String>) -> WebError {
        WebError::BadForm {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn param(param: &str, reason: impl Into<String>) -> WebError {
        WebError::BadParam {
            param: param.to_string(),
            message: format!("invalid parameter {param}: {}", reason.into()),
        }
    }
}

impl From<store::StoreError> for WebError {
    fn from(e: store::StoreError) -> WebError {
        let param = e.param().unwrap_or("query").to_string();
        WebError::BadParam {
            param,
            message: e.to_string(),
        }
    }
}
