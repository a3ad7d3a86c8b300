//! The static files of the pages, embedded in the binary with `include_bytes!`.
//!
//! Each is served at `/assets/<name>`, and pages link it as `/assets/<name>?v=<hash>` where
//! the hash is the first 16 hex digits of the file's SHA-256: a request carrying the current
//! hash may be cached for a year (`immutable`), because a changed file gets a new URL; any
//! other request (no `v`, or an old one) is revalidated (`no-cache`). The files are public
//! (the login page needs them) and hold no data.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TXT: &str = "text/plain; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every embedded file.
pub static ASSETS: [Asset; 7] = [
    Asset {
        name: "app.js",
        bytes: include_bytes!("../assets/app.js"),
        content_type: JS,
    },
    Asset {
        name: "app.css",
        bytes: include_bytes!("../assets/app.css"),
        content_type: CSS,
    },
    Asset {
        name: "favicon.svg",
        bytes: include_bytes!("../assets/favicon.svg"),
        content_type: SVG,
    },
    Asset {
        name: "wavesurfer.esm.js",
        bytes: include_bytes!("../assets/vendor/wavesurfer.esm.js"),
        content_type: JS,
    },
    Asset {
        name: "regions.esm.js",
        bytes: include_bytes!("../assets/vendor/regions.esm.js"),
        content_type: JS,
    },
    Asset {
        name: "timeline.esm.js",
        bytes: include_bytes!("../assets/vendor/timeline.esm.js"),
        content_type: JS,
    },
    Asset {
        name: "LICENSE-wavesurfer.txt",
        bytes: include_bytes!("../assets/vendor/LICENSE-wavesurfer.txt"),
        content_type: TXT,
    },
];

static HASHES: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| hex::encode(&Sha256::digest(a.bytes)[..8]))
        .collect()
});

/// `Cache-Control` of a request with the current hash.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of any other request.
pub const REVALIDATE: &str = "no-cache";

impl Asset {
    /// The content hash in the asset's URL.
    pub fn hash(&self) -> &'static str {
        let i = ASSETS
            .iter()
            .position(|a| std::ptr::eq(a, self))
            .expect("assets come from ASSETS");
        &HASHES[i]
    }

    /// The URL pages link: `/assets/<name>?v=<hash>`.
    pub fn url(&self) -> String {
        format!("/assets/{}?v={}", self.name, self.hash())
    }

    /// The `Cache-Control` of a request that asked for version `v`.
    pub fn cache_control(&self, v: Option<&str>) -> &'static str {
        if v == Some(self.hash()) {
            IMMUTABLE
        } else {
            REVALIDATE
        }
    }

    /// The strong entity tag (the hash), for revalidation.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.hash())
    }
}

/// The asset named `name` (exactly; no paths).
pub fn get(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The URL of a known asset. Names are constants of this crate, so an unknown one is a bug:
/// it gets the bare path (which answers 404) rather than a panic.
pub fn url(name: &str) -> String {
    match get(name) {
        Some(a) => a.url(),
        None => {
            debug_assert!(false, "no asset {name}");
            format!("/assets/{name}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_types_hashes_and_cache_rules() {
        let js = get("app.js").unwrap();
        assert_eq!(js.content_type, "text/javascript; charset=utf-8");
        assert_eq!(
            get("app.css").unwrap().content_type,
            "text/css; charset=utf-8"
        );
        assert_eq!(js.hash().len(), 16);
        assert_eq!(js.url(), format!("/assets/app.js?v={}", js.hash()));
        assert_eq!(js.cache_control(Some(js.hash())), IMMUTABLE);
        assert_eq!(js.cache_control(Some("0123456789abcdef")), REVALIDATE);
        assert_eq!(js.cache_control(None), REVALIDATE);
        assert!(get("../Cargo.toml").is_none());
        assert!(get("vendor/wavesurfer.esm.js").is_none(), "flat names only");
        let mut names: Vec<_> = ASSETS.iter().map(|a| a.name).collect();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        let hashes: std::collections::HashSet<_> = ASSETS.iter().map(|a| a.hash()).collect();
        assert_eq!(hashes.len(), ASSETS.len(), "distinct files, distinct URLs");
    }

    #[test]
    fn the_vendored_wavesurfer_is_version_8_and_self_contained() {
        for name in ["wavesurfer.esm.js", "regions.esm.js", "timeline.esm.js"] {
            let text = std::str::from_utf8(get(name).unwrap().bytes).unwrap();
            assert!(!text.contains("import "), "{name} imports nothing");
            assert!(
                !text.contains("https://"),
                "{name} loads nothing from elsewhere"
            );
        }
        let license = std::str::from_utf8(get("LICENSE-wavesurfer.txt").unwrap().bytes).unwrap();
        assert!(license.starts_with("BSD 3-Clause License"));
    }
}
