//! The watched policy rules file. Per-call decisions are the `contact` crate's; this module
//! only loads the rules, checks them, and swaps them in when the file changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use policy::Rules;

/// The rules in force: new calls take a snapshot, calls in progress keep theirs.
#[derive(Clone, Default)]
pub struct PolicyStore {
    rules: Arc<RwLock<Option<Arc<Rules>>>>,
}

impl PolicyStore {
    pub fn current(&self) -> Option<Arc<Rules>> {
        self.rules.read().unwrap().clone()
    }

    fn set(&self, r: Rules) {
        *self.rules.write().unwrap() = Some(Arc::new(r));
    }
}

pub fn load_rules(path: &Path) -> Result<Rules, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let rules: Rules =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    rules
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(rules)
}

/// Loads the rules file and watches it: a valid change applies to the next calls, an invalid
/// one is logged and the previous rules stay in force.
pub fn start(
    path: Option<PathBuf>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<PolicyStore> {
    let store = PolicyStore::default();
    let Some(path) = path else {
        return Ok(store);
    };
    let rules = load_rules(&path).map_err(|e| anyhow::anyhow!("policy: {e}"))?;
    store.set(rules);
    let s2 = store.clone();
    std::thread::Builder::new()
        .name("tapir-policy-watch".into())
        .spawn(move || {
            let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut last: Option<SystemTime> = stamp(&path);
            loop {
                // Polling the modification time works on every filesystem (including the bind
                // mounts and ConfigMaps operators use) and costs one stat a second.
                std::thread::sleep(Duration::from_secs(1));
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                last = now;
                match load_rules(&path) {
                    Ok(r) => {
                        s2.set(r);
                        metrics.policy_reloads.with_label_values(&["ok"]).inc();
                        tracing::info!(file = %path.display(), "policy reloaded; applies to new calls");
                    }
                    Err(e) => {
                        metrics.policy_reloads.with_label_values(&["rejected"]).inc();
                        tracing::error!("policy change rejected, previous rules stay in force: {e}");
                    }
                }
            }
        })?;
    Ok(store)
}
