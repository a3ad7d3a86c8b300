//! Users, sessions, API tokens, the audit log and the viewer's search restriction, against
//! SQLite and a real PostgreSQL (see `common/pg.rs`). Each case is an async function taking a
//! fresh catalog and its URL (for raw SQL that goes around the catalog, as an intruder would).

mod common;

use std::collections::HashSet;

use serde_json::json;
use sqlx::Connection;
use store::{
    AuditOrder, AuditQuery, BreakKind, Catalog, ChainBreak, ChainVerdict, Entry, NewAudit,
    NewToken, NewUser, Query, Restriction, SessionRecord, State, StoreError, UserUpdate,
};

const T0: i64 = 1_700_000_000_000;

fn new_user(name: &str, role: &str) -> NewUser {
    NewUser {
        username: name.into(),
        display_name: format!("{name} display"),
        role: role.into(),
        agent_id: Some(format!("{name}-id")),
        teams: vec!["complaints".into()],
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
    }
}

fn session(hash: &str, user_id: i64, now: i64) -> SessionRecord {
    SessionRecord {
        token_hash: hash.into(),
        user_id,
        csrf: format!("csrf-{hash}"),
        created_ms: now,
        last_seen_ms: now,
        expires_ms: now + 12 * 3_600_000,
        from_addr: Some("127.0.0.1".into()),
    }
}

fn audit(at: i64, actor: &str, action: &str, target: &str) -> NewAudit {
    NewAudit {
        at_ms: at,
        actor: actor.into(),
        action: action.into(),
        target: Some(target.into()),
        detail: json!({"b": 2, "a": [1, {"d": null, "c": "x"}]}),
        from: Some("192.0.2.7".into()),
    }
}

/// Runs SQL on the catalog's database around the catalog.
async fn raw(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql(sql).execute(&mut c).await?;
        c.close().await
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await?;
        sqlx::raw_sql(sql).execute(&mut c).await?;
        c.close().await
    }
}

async fn users_are_added_found_changed_and_disabled(c: Catalog, _url: String) {
    let anna = c.add_user(&new_user("anna", "agent"), T0).await.unwrap();
    let bert = c
        .add_user(&new_user("bert", "supervisor"), T0 + 1)
        .await
        .unwrap();
    assert_ne!(anna, bert);
    match c.add_user(&new_user("anna", "admin"), T0).await {
        Err(StoreError::Exists { what: "user", name }) => assert_eq!(name, "anna"),
        other => panic!("{other:?}"),
    }
    let u = c.user_by_name("anna").await.unwrap().unwrap();
    assert_eq!(u.id, anna);
    assert_eq!(u.role, "agent");
    assert_eq!(u.agent_id.as_deref(), Some("anna-id"));
    assert_eq!(u.teams, vec!["complaints".to_string()]);
    assert!(!u.disabled);
    assert_eq!(c.user_by_id(bert).await.unwrap().unwrap().username, "bert");
    assert!(c.user_by_name("carl").await.unwrap().is_none());
    let names: Vec<String> = c
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["anna", "bert"]);

    // A new password ends the user's sessions, not others'.
    c.add_session(&session("s-anna", anna, T0)).await.unwrap();
    c.add_session(&session("s-bert", bert, T0)).await.unwrap();
    assert!(c
        .set_password("anna", "$argon2id$new", T0 + 5)
        .await
        .unwrap());
    assert!(!c.set_password("carl", "$argon2id$x", T0).await.unwrap());
    let u = c.user_by_name("anna").await.unwrap().unwrap();
    assert_eq!(u.password_hash, "$argon2id$new");
    assert_eq!(u.updated_ms, T0 + 5);
    assert!(c.session("s-anna").await.unwrap().is_none());
    assert!(c.session("s-bert").await.unwrap().is_some());

    // A role change ends the sessions; a display name alone does not.
    c.add_session(&session("s-anna2", anna, T0)).await.unwrap();
    let rename = UserUpdate {
        display_name: Some("Anna A.".into()),
        ..Default::default()
    };
    assert!(c.update_user("anna", &rename, T0 + 6).await.unwrap());
    assert!(c.session("s-anna2").await.unwrap().is_some());
    let promote = UserUpdate {
        role: Some("supervisor".into()),
        agent_id: Some(None),
        teams: Some(vec!["sales".into(), "complaints".into()]),
        ..Default::default()
    };
    assert!(c.update_user("anna", &promote, T0 + 7).await.unwrap());
    assert!(c.session("s-anna2").await.unwrap().is_none());
    let u = c.user_by_name("anna").await.unwrap().unwrap();
    assert_eq!(
        (u.role.as_str(), u.agent_id, u.display_name.as_str()),
        ("supervisor", None, "Anna A.")
    );
    assert_eq!(u.teams, ["sales", "complaints"]);
    let bad_role = UserUpdate {
        role: Some("boss".into()),
        ..Default::default()
    };
    assert!(
        c.update_user("anna", &bad_role, T0).await.is_err(),
        "the schema refuses unknown roles"
    );
    assert!(!c.update_user("carl", &rename, T0).await.unwrap());

    // Disabling ends the sessions; enabling again opens none.
    assert!(c.set_user_disabled("bert", true, T0 + 8).await.unwrap());
    assert!(c.user_by_name("bert").await.unwrap().unwrap().disabled);
    assert!(c.session("s-bert").await.unwrap().is_none());
    assert!(c.set_user_disabled("bert", false, T0 + 9).await.unwrap());
    assert!(!c.user_by_name("bert").await.unwrap().unwrap().disabled);
    assert!(!c.set_user_disabled("carl", true, T0).await.unwrap());
}

async fn sessions_live_until_logout_or_expiry(c: Catalog, _url: String) {
    let id = c.add_user(&new_user("anna", "agent"), T0).await.unwrap();
    let s = session("h1", id, T0);
    c.add_session(&s).await.unwrap();
    let (got, user) = c.session("h1").await.unwrap().unwrap();
    assert_eq!(got, s);
    assert_eq!(user.username, "anna");
    assert!(c.session("h2").await.unwrap().is_none());
    assert!(c.touch_session("h1", T0 + 60_000).await.unwrap());
    assert_eq!(
        c.session("h1").await.unwrap().unwrap().0.last_seen_ms,
        T0 + 60_000
    );
    assert!(c.delete_session("h1").await.unwrap());
    assert!(!c.delete_session("h1").await.unwrap());
    assert!(!c.touch_session("h1", T0).await.unwrap());

    // Purge: past the absolute end, or idle since the cut-off.
    let mut old = session("old", id, T0);
    old.expires_ms = T0 + 1000;
    let mut idle = session("idle", id, T0);
    idle.last_seen_ms = T0 + 10;
    let fresh = session("fresh", id, T0 + 5000);
    for s in [&old, &idle, &fresh] {
        c.add_session(s).await.unwrap();
    }
    assert_eq!(c.purge_sessions(T0 + 2000, T0 + 100).await.unwrap(), 2);
    assert!(c.session("fresh").await.unwrap().is_some());
    assert!(c.session("old").await.unwrap().is_none());
    assert!(c.session("idle").await.unwrap().is_none());
}

async fn tokens_are_found_by_hash_until_revoked(c: Catalog, _url: String) {
    let t = NewToken {
        name: "ivr".into(),
        token_hash: "th1".into(),
        scopes: "control".into(),
        created_by: "cli".into(),
    };
    let id = c.add_token(&t, T0).await.unwrap();
    assert!(matches!(
        c.add_token(&t, T0).await,
        Err(StoreError::Exists { what: "token", .. })
    ));
    let got = c.token_by_hash("th1").await.unwrap().unwrap();
    assert_eq!(
        (got.id, got.name.as_str(), got.scopes.as_str()),
        (id, "ivr", "control")
    );
    assert_eq!(got.last_used_ms, None);
    c.touch_token(id, T0 + 9).await.unwrap();
    assert_eq!(
        c.token_by_hash("th1").await.unwrap().unwrap().last_used_ms,
        Some(T0 + 9)
    );
    assert!(c.token_by_hash("th2").await.unwrap().is_none());
    assert!(c.revoke_token("ivr", T0 + 10).await.unwrap());
    assert!(!c.revoke_token("ivr", T0 + 11).await.unwrap());
    assert!(c.token_by_hash("th1").await.unwrap().is_none());
    let all = c.list_tokens().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].revoked_ms, Some(T0 + 10));
}

async fn the_audit_log_chains_lists_and_pages(c: Catalog, _url: String) {
    assert_eq!(
        c.audit_verify().await.unwrap(),
        ChainVerdict::Intact {
            entries: 0,
            head_hash: store::audit::GENESIS_HASH.into()
        }
    );
    let mut appended = Vec::new();
    for i in 0..30i64 {
        let (actor, action) = match i % 3 {
            0 => ("anna", "play"),
            1 => ("bert", "search"),
            _ => ("admin", "delete"),
        };
        appended.push(
            c.audit_append(&audit(T0 + i * 1000, actor, action, &format!("c{}", i % 5)))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        appended.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    assert_eq!(appended[0].prev_hash, store::audit::GENESIS_HASH);
    store::verify_chain(&appended).unwrap();
    let stored = c.audit_chain(0, 1000).await.unwrap();
    assert_eq!(stored, appended, "entries read back as they were appended");
    assert_eq!(
        c.audit_head().await.unwrap(),
        (30, appended[29].hash.clone())
    );
    match c.audit_verify().await.unwrap() {
        ChainVerdict::Intact { entries, head_hash } => {
            assert_eq!(entries, 30);
            assert_eq!(head_hash, appended[29].hash);
        }
        other => panic!("{other:?}"),
    }

    // Filters.
    let list = |q: AuditQuery| {
        let c = c.clone();
        async move { c.audit_list(&q).await.unwrap() }
    };
    let p = list(AuditQuery {
        actor: Some("anna".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(p.entries.len(), 10);
    assert!(p.entries.iter().all(|e| e.actor == "anna"));
    assert!(
        p.entries.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first"
    );
    let p = list(AuditQuery {
        action: Some("delete".into()),
        target: Some("c2".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        p.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [18, 3],
        "deletes of c2: i = 2 and 17"
    );
    let p = list(AuditQuery {
        from_ms: Some(T0 + 10_000),
        to_ms: Some(T0 + 15_000),
        order: AuditOrder::OldestFirst,
        ..Default::default()
    })
    .await;
    assert_eq!(
        p.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15]
    );
    assert!(list(AuditQuery {
        actor: Some("nobody".into()),
        ..Default::default()
    })
    .await
    .entries
    .is_empty());

    // Paging both ways sees every entry once.
    for order in [AuditOrder::NewestFirst, AuditOrder::OldestFirst] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let p = list(AuditQuery {
                order,
                cursor,
                limit: 7,
                ..Default::default()
            })
            .await;
            seen.extend(p.entries.iter().map(|e| e.seq));
            match p.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        let mut want: Vec<i64> = (1..=30).collect();
        if order == AuditOrder::NewestFirst {
            want.reverse();
        }
        assert_eq!(seen, want, "{order:?}");
    }
    for (q, param) in [
        (
            AuditQuery {
                limit: 1001,
                ..Default::default()
            },
            "limit",
        ),
        (
            AuditQuery {
                from_ms: Some(5),
                to_ms: Some(4),
                ..Default::default()
            },
            "to",
        ),
    ] {
        match c.audit_list(&q).await {
            Err(StoreError::BadQuery { param: p, .. }) => assert_eq!(p, param),
            other => panic!("{other:?}"),
        }
    }
}

async fn an_edited_or_deleted_audit_entry_breaks_the_chain(c: Catalog, url: String) {
    for i in 0..6 {
        c.audit_append(&audit(T0 + i, "anna", "play", "c1"))
            .await
            .unwrap();
    }
    // Through SQL the log refuses edits and deletions.
    for sql in [
        "UPDATE audit_log SET actor = 'bert' WHERE seq = 3",
        "DELETE FROM audit_log WHERE seq = 3",
    ] {
        let err = raw(&url, sql).await.unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if url.starts_with("postgres") {
        let err = raw(&url, "TRUNCATE audit_log").await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    // Someone who can drop the triggers can edit, but the chain shows it.
    let drop = if url.starts_with("postgres") {
        "DROP TRIGGER audit_log_no_update ON audit_log; \
         DROP TRIGGER audit_log_no_truncate ON audit_log"
    } else {
        "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete"
    };
    raw(&url, drop).await.unwrap();
    raw(&url, "UPDATE audit_log SET actor = 'bert' WHERE seq = 3")
        .await
        .unwrap();
    assert_eq!(
        c.audit_verify().await.unwrap(),
        ChainVerdict::Broken(ChainBreak {
            seq: 3,
            kind: BreakKind::Altered
        })
    );
    raw(&url, "UPDATE audit_log SET actor = 'anna' WHERE seq = 3")
        .await
        .unwrap();
    assert!(matches!(
        c.audit_verify().await.unwrap(),
        ChainVerdict::Intact { entries: 6, .. }
    ));
    // A detail edited.
    raw(
        &url,
        "UPDATE audit_log SET detail = '{\"a\":1}' WHERE seq = 2",
    )
    .await
    .unwrap();
    assert_eq!(
        c.audit_verify().await.unwrap(),
        ChainVerdict::Broken(ChainBreak {
            seq: 2,
            kind: BreakKind::Altered
        })
    );
    // Deleted: in the middle, and at the end (the head still knows).
    raw(&url, "DELETE FROM audit_log WHERE seq = 2")
        .await
        .unwrap();
    assert_eq!(
        c.audit_verify().await.unwrap(),
        ChainVerdict::Broken(ChainBreak {
            seq: 2,
            kind: BreakKind::Missing
        })
    );
    raw(&url, "DELETE FROM audit_log").await.unwrap();
    assert_eq!(
        c.audit_verify().await.unwrap(),
        ChainVerdict::Broken(ChainBreak {
            seq: 1,
            kind: BreakKind::Missing
        })
    );
}

/// Two catalogs (two pools, as two nodes would have) append at once: one chain, no fork.
async fn concurrent_appends_never_fork_the_chain(c: Catalog, url: String) {
    let other = Catalog::open(&url).await.unwrap();
    let mut tasks = Vec::new();
    for (node, cat) in [("a", c.clone()), ("b", other.clone())] {
        for w in 0..4 {
            let cat = cat.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..15 {
                    cat.audit_append(&audit(T0 + i, &format!("{node}{w}"), "search", "q"))
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let chain = c.audit_chain(0, 1000).await.unwrap();
    assert_eq!(chain.len(), 120);
    store::verify_chain(&chain).unwrap();
    assert!(matches!(
        other.audit_verify().await.unwrap(),
        ChainVerdict::Intact { entries: 120, .. }
    ));
    other.close().await;
}

fn entry(id: &str, start: i64, agent: Option<&str>, team: Option<&str>) -> Entry {
    let meta = recorder::RecordingMetadata {
        contact_id: id.into(),
        from: "+4930111".into(),
        to: "201".into(),
        route: "pbx".into(),
        direction: "inbound".into(),
        start_unix_ms: start as u64,
        duration_ms: 60_000,
        ..Default::default()
    };
    let mut e = Entry::from_metadata(&meta, "node-a", State::Finished, start).unwrap();
    e.agent = agent.map(str::to_string);
    e.team = team.map(str::to_string);
    e
}

async fn a_restriction_limits_every_search(c: Catalog, _url: String) {
    let rows = [
        ("a1", Some("anna"), Some("complaints")),
        ("a2", Some("anna"), None),
        ("b1", Some("bert"), Some("complaints")),
        ("b2", Some("bert"), Some("sales")),
        ("n1", None, Some("sales")),
        ("n2", None, None),
        ("e1", Some(""), Some("")),
    ];
    let all: Vec<Entry> = rows
        .iter()
        .enumerate()
        .map(|(i, (id, a, t))| entry(id, T0 + i as i64 * 1000, *a, *t))
        .collect();
    c.upsert_many(&all).await.unwrap();
    let ids = |q: Query| {
        let c = c.clone();
        async move {
            let mut out = HashSet::new();
            let mut q = q;
            loop {
                let p = c.search(&q).await.unwrap();
                out.extend(p.entries.into_iter().map(|e| e.contact_id));
                match p.next {
                    Some(n) => q.cursor = Some(n),
                    None => return out,
                }
            }
        }
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
    let r = |agents: &[&str], teams: &[&str]| Query {
        restrict: Some(Restriction {
            agents: agents.iter().map(|s| s.to_string()).collect(),
            teams: teams.iter().map(|s| s.to_string()).collect(),
        }),
        limit: 2,
        ..Default::default()
    };
    assert_eq!(
        ids(Query::default()).await,
        set(&["a1", "a2", "b1", "b2", "n1", "n2", "e1"])
    );
    assert_eq!(ids(r(&["anna"], &[])).await, set(&["a1", "a2"]), "agent");
    assert_eq!(
        ids(r(&["anna"], &["sales"])).await,
        set(&["a1", "a2", "b2", "n1"]),
        "supervisor of sales who is also agent anna"
    );
    assert_eq!(
        ids(r(&[], &["complaints", "sales"])).await,
        set(&["a1", "b1", "b2", "n1"])
    );
    assert_eq!(ids(r(&[], &[])).await, set(&[]), "nothing, not everything");
    assert_eq!(
        ids(r(&[""], &[""])).await,
        set(&[]),
        "empty ids match nothing"
    );
    assert_eq!(ids(r(&["nobody"], &["no-team"])).await, set(&[]));
    // The restriction and the filters both apply: anna cannot look into bert's calls.
    let mut q = r(&["anna"], &[]);
    q.agent = Some("bert".into());
    assert_eq!(ids(q).await, set(&[]));
    let mut q = r(&["anna"], &["complaints"]);
    q.agent = Some("bert".into());
    assert_eq!(ids(q).await, set(&["b1"]));
    let mut q = r(&["anna"], &[]);
    q.team = Some("complaints".into());
    assert_eq!(ids(q).await, set(&["a1"]));
    // The same rule in Rust, for fetches by id.
    let rule = Restriction {
        agents: vec!["anna".into()],
        teams: vec!["sales".into()],
    };
    let admitted: HashSet<String> = all
        .iter()
        .filter(|e| rule.admits(e.agent.as_deref(), e.team.as_deref()))
        .map(|e| e.contact_id.clone())
        .collect();
    assert_eq!(admitted, ids(r(&["anna"], &["sales"])).await);
}

/// More recordings in a view than the SQLite planner's restriction probe counts (5000), and
/// fewer: both plans (the start index, the agent and team indexes) page like the oracle.
async fn wide_and_narrow_views_page_alike(c: Catalog, _url: String) {
    let all: Vec<Entry> = (0..6000i64)
        .map(|i| {
            let agent = format!("agent{}", i % 50);
            let team = format!("team{}", i % 10);
            entry(
                &format!("w{i:05}"),
                T0 + (i * 7919) % 6000 * 1000,
                Some(&agent),
                Some(&team),
            )
        })
        .collect();
    c.upsert_many(&all).await.unwrap();
    let names = |prefix: &str, n: &[u32]| -> Vec<String> {
        n.iter().map(|i| format!("{prefix}{i}")).collect()
    };
    for r in [
        Restriction {
            agents: names("agent", &[3]),
            teams: names("team", &[1, 2]),
        },
        Restriction {
            agents: names("agent", &[3]),
            teams: names("team", &[0, 1, 2, 3, 4, 5, 6, 7, 8]),
        },
        Restriction {
            agents: names("agent", &[1, 2]),
            teams: vec![],
        },
    ] {
        let mut want: Vec<&Entry> = all
            .iter()
            .filter(|e| r.admits(e.agent.as_deref(), e.team.as_deref()))
            .collect();
        want.sort_by_key(|e| std::cmp::Reverse((e.start_ms, e.contact_id.clone())));
        let want: Vec<String> = want.iter().map(|e| e.contact_id.clone()).collect();
        let mut q = Query {
            restrict: Some(r.clone()),
            limit: 700,
            ..Default::default()
        };
        let mut got = Vec::new();
        loop {
            let p = c.search(&q).await.unwrap();
            got.extend(p.entries.into_iter().map(|e| e.contact_id));
            match p.next {
                Some(n) => q.cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(got, want, "{r:?}");
    }
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("tapir.db").display());
                    let c = store::Catalog::open(&url).await.unwrap();
                    super::$case(c.clone(), url).await;
                    c.close().await;
                }
            )*
        }

        /// One cluster for all cases; each case gets a database of its own.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres_all_cases() {
            let Some(pg) = common::pg::PgCluster::start() else { return };
            $(
                let url = pg.create_db(stringify!($case)).await;
                let c = Catalog::open(&url).await.unwrap();
                eprintln!("postgres: {}", stringify!($case));
                $case(c.clone(), url).await;
                c.close().await;
            )*
        }
    };
}

cases!(
    users_are_added_found_changed_and_disabled,
    sessions_live_until_logout_or_expiry,
    tokens_are_found_by_hash_until_revoked,
    the_audit_log_chains_lists_and_pages,
    an_edited_or_deleted_audit_entry_breaks_the_chain,
    concurrent_appends_never_fork_the_chain,
    a_restriction_limits_every_search,
    wide_and_narrow_views_page_alike,
);
