//! The frame of every page: head, navigation by role, the user and the logout form, and the
//! error pages.

use access::Role;
use maud::{html, Markup, DOCTYPE};

use crate::assets;

/// The Content-Security-Policy of every page. Scripts only from this site (no inline
/// script anywhere); inline styles are allowed because wavesurfer.js styles its shadow DOM
/// with a `<style>` element.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data: blob:; media-src 'self'; connect-src 'self'; font-src 'self'; \
form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Which part of the site a page belongs to (its navigation item is marked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Recordings,
    Audit,
    Users,
    /// The login and error pages.
    None,
}

/// The logged-in user, as the frame shows them.
#[derive(Debug, Clone, Copy)]
pub struct UserBadge<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub role: Role,
}

/// What the frame of a page needs: who is logged in and the session's CSRF token.
#[derive(Debug, Clone, Copy)]
pub struct Chrome<'a> {
    /// `None` on the login page.
    pub user: Option<UserBadge<'a>>,
    /// The session's CSRF token, for the logout form and the scripts.
    pub csrf: Option<&'a str>,
    pub current: Nav,
}

impl<'a> Chrome<'a> {
    /// The frame of a page nobody is logged in to (the login page).
    pub fn anonymous() -> Chrome<'static> {
        Chrome {
            user: None,
            csrf: None,
            current: Nav::None,
        }
    }
}

/// The navigation items a role gets: (item, label, path).
pub fn nav_items(role: Role) -> Vec<(Nav, &'static str, &'static str)> {
    let mut v = vec![(
        Nav::Recordings,
        match role {
            Role::Agent => "My recordings",
            Role::Supervisor => "Team recordings",
            Role::Admin => "Recordings",
        },
        "/recordings",
    )];
    if role == Role::Admin {
        v.push((Nav::Audit, "Audit log", "/audit"));
        v.push((Nav::Users, "Users", "/users"));
    }
    v
}

/// A whole page: `title` and `body` inside the frame.
pub fn page(chrome: &Chrome<'_>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                @if let Some(t) = chrome.csrf {
                    meta name="csrf-token" content=(t);
                }
                title { (title) " · tapir" }
                link rel="icon" href=(assets::url("favicon.svg")) type="image/svg+xml";
                link rel="stylesheet" href=(assets::url("app.css"));
                script type="module" src=(assets::url("app.js")) {}
            }
            body {
                header.top {
                    a.brand href="/" { "tapir" }
                    @if let Some(u) = chrome.user {
                        nav {
                            @for (item, label, path) in nav_items(u.role) {
                                a href=(path) aria-current=[(item == chrome.current).then_some("page")] { (label) }
                            }
                        }
                        div.who {
                            span.name title=(u.username) { (u.display_name) }
                            " "
                            span.role { (u.role.as_str()) }
                            form.logout method="post" action="/logout" {
                                input type="hidden" name="csrf" value=[chrome.csrf];
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The reason phrase of the statuses the pages answer with.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad request",
        403 => "Forbidden",
        404 => "Not found",
        413 => "Too large",
        429 => "Too many requests",
        503 => "Unavailable",
        _ => "Error",
    }
}

/// An error page: the status, its reason and a sentence.
pub fn error_page(chrome: &Chrome<'_>, status: u16, message: &str) -> Markup {
    let title = format!("{status} {}", reason(status));
    page(
        chrome,
        &title,
        html! {
            section.error {
                h1 { (title) }
                p { (message) }
                p { a href="/recordings" { "Back to the recordings" } }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const XSS: &str = "<script>alert(1)</script>";

    #[test]
    fn the_navigation_follows_the_role() {
        let paths = |r| -> Vec<&str> { nav_items(r).into_iter().map(|i| i.2).collect() };
        assert_eq!(paths(Role::Agent), ["/recordings"]);
        assert_eq!(paths(Role::Supervisor), ["/recordings"]);
        assert_eq!(paths(Role::Admin), ["/recordings", "/audit", "/users"]);
        for role in [Role::Agent, Role::Supervisor] {
            let html = page(
                &Chrome {
                    user: Some(UserBadge {
                        username: "anna",
                        display_name: "Anna",
                        role,
                    }),
                    csrf: Some("tok"),
                    current: Nav::Recordings,
                },
                "x",
                html! {},
            )
            .into_string();
            assert!(!html.contains("/audit"), "{role}: {html}");
            assert!(!html.contains("/users"), "{role}");
            assert!(html.contains(r#"aria-current="page""#));
        }
    }

    #[test]
    fn the_frame_escapes_the_user_and_carries_the_csrf_token() {
        let html = page(
            &Chrome {
                user: Some(UserBadge {
                    username: XSS,
                    display_name: XSS,
                    role: Role::Admin,
                }),
                csrf: Some("\"><script>x</script>"),
                current: Nav::Users,
            },
            XSS,
            html! {},
        )
        .into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains(r#"<form class="logout" method="post" action="/logout">"#));
        assert!(
            html.contains(r#"name="csrf" value="&quot;&gt;&lt;script&gt;"#),
            "{html}"
        );
        assert!(html.contains(r#"<meta name="csrf-token""#));
        assert!(html.contains("/assets/app.js?v="));
        let anon = page(&Chrome::anonymous(), "Log in", html! {}).into_string();
        assert!(!anon.contains("logout") && !anon.contains("csrf"));
    }

    #[test]
    fn error_pages_say_what_happened() {
        let html = error_page(&Chrome::anonymous(), 404, XSS).into_string();
        assert!(html.contains("404 Not found"));
        assert!(!html.contains("<script>alert"));
    }
}
