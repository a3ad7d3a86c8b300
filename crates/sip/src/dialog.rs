//! Dialog state (RFC 3261 §12) for one side of a B2BUA call, and in-dialog request building.
//!
//! A [`Dialog`] remembers what is needed to send requests inside the dialog (remote target,
//! route set, tags, local CSeq) and to check requests received in it (remote CSeq).

use std::fmt::Write as _;

use crate::message::{Method, Request};
use crate::uri::{NameAddr, Uri};

#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// Our From (UAC side) or To (UAS side) value, printed form.
    pub local_uri: NameAddr,
    pub remote_uri: NameAddr,
    /// Contact of the peer: where in-dialog requests go.
    pub remote_target: Uri,
    /// Route set, in the order requests must carry it.
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: Option<u32>,
}

impl Dialog {
    /// Builds an in-dialog request (§12.2.1.1). The caller adds Via, Contact and body.
    pub fn request(&mut self, method: Method) -> Request {
        if method != Method::Ack && method != Method::Cancel {
            self.local_cseq += 1;
        }
        let mut r = Request::new(method.clone(), self.remote_target.clone());
        r.headers
            .push("From", with_tag(&self.local_uri, Some(&self.local_tag)));
        r.headers
            .push("To", with_tag(&self.remote_uri, self.remote_tag.as_deref()));
        r.headers.push("Call-ID", self.call_id.clone());
        r.headers
            .push("CSeq", format!("{} {}", self.local_cseq, method.as_str()));
        r.headers.push("Max-Forwards", "70");
        for route in &self.route_set {
            r.headers.push("Route", route.clone());
        }
        r
    }

    /// Checks the CSeq of a request received in the dialog (§12.2.2): lower than the last one
    /// seen means out of order, answered 500.
    pub fn accept_remote_cseq(&mut self, seq: u32, method: &Method) -> bool {
        if *method == Method::Ack || *method == Method::Cancel {
            return true;
        }
        match self.remote_cseq {
            Some(last) if seq <= last => false,
            _ => {
                self.remote_cseq = Some(seq);
                true
            }
        }
    }
}

/// A From/To value with its tag, printed straight from the dialog's address (no copy of the
/// address for each request).
fn with_tag(na: &NameAddr, tag: Option<&str>) -> String {
    let Some(tag) = tag else {
        return na.to_string();
    };
    if na.params.contains("tag") {
        let mut na = na.clone();
        na.params.set("tag", Some(tag.to_string()));
        return na.to_string();
    }
    let mut s = String::with_capacity(64);
    let _ = write!(s, "{na};tag={tag}");
    s
}
