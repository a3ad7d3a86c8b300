//! The login page. The form posts to `/login` (`crates/tapir/src/auth.rs`); a failure comes
//! back to this page with a message and the status of the failure (401, 429, 400).

use maud::{html, Markup};

use crate::layout::{page, Chrome};

/// What the login page says above its form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginNotice {
    /// A wrong username or password (the same words whatever was wrong).
    Failed,
    /// Too many failed logins: try again after this many seconds.
    Throttled { retry_after_s: u64 },
    /// The form was malformed.
    BadForm,
    /// The session ended (logout, expiry): log in again.
    LoggedOut,
}

impl LoginNotice {
    pub fn text(&self) -> String {
        match self {
            LoginNotice::Failed => "Wrong username or password.".into(),
            LoginNotice::Throttled { retry_after_s } => {
                let minutes = retry_after_s.div_ceil(60).max(1);
                format!(
                    "Too many failed logins. Try again in {minutes} minute{}.",
                    if minutes == 1 { "" } else { "s" }
                )
            }
            LoginNotice::BadForm => "Enter a username and a password.".into(),
            LoginNotice::LoggedOut => "You are logged out.".into(),
        }
    }

    fn is_error(&self) -> bool {
        !matches!(self, LoginNotice::LoggedOut)
    }
}

/// The login page. `next` is where to go after the login (a path of this site; the POST
/// handler checks it again), `username` refills the field after a failure.
pub fn login_page(
    next: Option<&str>,
    notice: Option<LoginNotice>,
    username: Option<&str>,
) -> Markup {
    page(
        &Chrome::anonymous(),
        "Log in",
        html! {
            section.login {
                h1 { "Log in" }
                @if let Some(n) = notice {
                    p.notice.error[n.is_error()] role="alert" { (n.text()) }
                }
                form method="post" action="/login" {
                    label { "Username"
                        input name="username" autocomplete="username" required autofocus value=[username];
                    }
                    label { "Password"
                        input type="password" name="password" autocomplete="current-password" required;
                    }
                    input type="hidden" name="next" value=(next.unwrap_or("/recordings"));
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_page_shows_its_message_and_escapes_what_it_refills() {
        let xss = "<script>alert(1)</script>";
        let html = login_page(Some(xss), Some(LoginNotice::Failed), Some(xss)).into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("Wrong username or password."));
        assert!(html.contains(r#"action="/login""#));
        let t = login_page(
            None,
            Some(LoginNotice::Throttled { retry_after_s: 900 }),
            None,
        )
        .into_string();
        assert!(t.contains("Try again in 15 minutes."), "{t}");
        assert!(t.contains(r#"value="/recordings""#));
        assert_eq!(
            LoginNotice::Throttled { retry_after_s: 30 }.text(),
            "Too many failed logins. Try again in 1 minute."
        );
    }
}
