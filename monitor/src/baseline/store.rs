//! Where baselines are kept: the same tables and statements on SQLite (one runner, the default,
//! under `/var/lib/monitor/`) and PostgreSQL (a fleet sharing one baseline). A run is recorded
//! in one transaction, at most once (its key is unique), and every count is raised in the
//! database (`runs = runs + 1` under the row's lock), so runners recording runs of one job at
//! once lose nothing. The schema is versioned: migrations run in order, once, under a lock.

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::{
    behaviour::{Behaviour, BehaviourKind, RunRecord},
    compare::{PastRun, Seen, Snapshot, RECENT_RUNS},
};

/// A value given to or read from a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Int(i64),
    Null,
}

impl Value {
    pub fn text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Null => String::new(),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            Value::Text(s) => s.parse().unwrap_or(0),
            Value::Null => 0,
        }
    }

    pub fn opt_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            v => Some(v.text()),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}
impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::Text(s.clone())
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<Option<&String>> for Value {
    fn from(s: Option<&String>) -> Self {
        s.map_or(Value::Null, |s| Value::Text(s.clone()))
    }
}

/// What a database must do for the store: statements written with `$1`-style parameters.
pub trait Database: Send {
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;
    /// Starts a transaction that will write (SQLite takes its write lock at once).
    fn begin(&mut self) -> anyhow::Result<()>;
    fn commit(&mut self) -> anyhow::Result<()>;
    fn rollback(&mut self);
    /// Rows changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> anyhow::Result<u64>;
    fn query(&mut self, sql: &str, params: &[Value]) -> anyhow::Result<Vec<Vec<Value>>>;
    /// Taken inside the migration transaction, so that two agents starting at once do not
    /// both create the tables (PostgreSQL; SQLite's write lock already does it).
    fn lock_for_migration(&mut self) -> anyhow::Result<()>;
}

/// The schema, one entry per version; never edit an entry, add one.
const MIGRATIONS: &[&str] = &[
    // 1: runs, the steps each had (with how many new behaviours), behaviours, and what was new
    // in each run (for `baseline diff`).
    "CREATE TABLE baseline_runs (
        job TEXT NOT NULL,
        run TEXT NOT NULL,
        run_id TEXT,
        ended TEXT NOT NULL,
        recorded_ns BIGINT NOT NULL,
        PRIMARY KEY (job, run)
    );
    CREATE INDEX baseline_runs_by_time ON baseline_runs (job, recorded_ns);
    CREATE TABLE baseline_run_steps (
        job TEXT NOT NULL,
        run TEXT NOT NULL,
        step TEXT NOT NULL,
        new_items BIGINT NOT NULL,
        PRIMARY KEY (job, run, step)
    );
    CREATE TABLE baseline_behaviours (
        job TEXT NOT NULL,
        step TEXT NOT NULL,
        kind TEXT NOT NULL,
        item TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        runs BIGINT NOT NULL,
        PRIMARY KEY (job, step, kind, item)
    );
    CREATE TABLE baseline_run_new (
        job TEXT NOT NULL,
        run TEXT NOT NULL,
        step TEXT NOT NULL,
        kind TEXT NOT NULL,
        item TEXT NOT NULL,
        PRIMARY KEY (job, run, step, kind, item)
    );",
];

pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// A job's entry in `baseline status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEntry {
    pub job: String,
    pub runs: u64,
    pub last_ended: String,
}

/// A run's key and, by step, what it brought that the baseline had not seen.
pub type RunDiff = (String, BTreeMap<String, Vec<Behaviour>>);

/// What `baseline forget` removes.
#[derive(Debug, Clone, Default)]
pub struct Forget {
    pub step: Option<String>,
    pub behaviour: Option<Behaviour>,
    pub kind: Option<BehaviourKind>,
}

pub struct Store {
    db: Box<dyn Database>,
    /// Runs kept per job ([`MAX_RUNS_KEPT`]).
    keep_runs: i64,
}

impl Store {
    /// Opens the store and brings its schema up to date.
    pub fn new(mut db: Box<dyn Database>) -> anyhow::Result<Self> {
        migrate(db.as_mut()).context("bringing the baseline schema up to date")?;
        Ok(Store {
            db,
            keep_runs: MAX_RUNS_KEPT,
        })
    }

    /// Keeps this many runs per job instead of [`MAX_RUNS_KEPT`].
    pub fn keeping_runs(mut self, runs: i64) -> Self {
        self.keep_runs = runs.max(1);
        self
    }

    pub fn kind(&self) -> &'static str {
        self.db.kind()
    }

    /// A job's baseline as recorded now.
    pub fn snapshot(&mut self, job: &str) -> anyhow::Result<Snapshot> {
        let db = self.db.as_mut();
        let runs = db
            .query(
                "SELECT count(*) FROM baseline_runs WHERE job = $1",
                &[job.into()],
            )?
            .first()
            .and_then(|r| r.first())
            .map_or(0, Value::int) as u64;
        let mut recent: Vec<PastRun> = db
            .query(
                &format!(
                    "SELECT run, run_id, ended FROM baseline_runs WHERE job = $1
                     ORDER BY recorded_ns DESC, run DESC LIMIT {RECENT_RUNS}"
                ),
                &[job.into()],
            )?
            .into_iter()
            .map(|r| PastRun {
                run: r[0].text(),
                run_id: r[1].opt_text(),
                ended: r[2].text(),
                new_by_step: BTreeMap::new(),
            })
            .collect();
        recent.reverse();
        let steps = db.query(
            &format!(
                "SELECT s.run, s.step, s.new_items FROM baseline_run_steps s
                 JOIN (SELECT run FROM baseline_runs WHERE job = $1
                       ORDER BY recorded_ns DESC, run DESC LIMIT {RECENT_RUNS}) r
                 ON s.run = r.run WHERE s.job = $1"
            ),
            &[job.into()],
        )?;
        let index: BTreeMap<String, usize> = recent
            .iter()
            .enumerate()
            .map(|(i, r)| (r.run.clone(), i))
            .collect();
        for row in steps {
            if let Some(&i) = index.get(&row[0].text()) {
                recent[i]
                    .new_by_step
                    .insert(row[1].text(), row[2].int().max(0) as u64);
            }
        }
        let mut known: BTreeMap<String, BTreeMap<Behaviour, Seen>> = BTreeMap::new();
        for row in db.query(
            "SELECT step, kind, item, first_seen, last_seen, runs FROM baseline_behaviours
             WHERE job = $1",
            &[job.into()],
        )? {
            // A kind this version does not know (written by a newer agent) is left alone.
            let Some(kind) = BehaviourKind::parse(&row[1].text()) else {
                continue;
            };
            known.entry(row[0].text()).or_default().insert(
                Behaviour {
                    kind,
                    item: row[2].text(),
                },
                Seen {
                    first_seen: row[3].text(),
                    last_seen: row[4].text(),
                    runs: row[5].int().max(0) as u64,
                },
            );
        }
        Ok(Snapshot {
            job: job.to_string(),
            runs,
            recent,
            known,
        })
    }

    /// Records a run (one transaction); false when it was recorded already (a pending record
    /// sent again after an answer that was lost).
    pub fn record(
        &mut self,
        run: &RunRecord,
        new: &BTreeMap<String, Vec<Behaviour>>,
    ) -> anyhow::Result<bool> {
        let db = self.db.as_mut();
        db.begin()?;
        let result = record_in(db, run, new, self.keep_runs);
        match result {
            Ok(true) => {
                db.commit()?;
                Ok(true)
            }
            Ok(false) => {
                db.rollback();
                Ok(false)
            }
            Err(e) => {
                db.rollback();
                Err(e)
            }
        }
    }

    pub fn jobs(&mut self) -> anyhow::Result<Vec<JobEntry>> {
        Ok(self
            .db
            .query(
                "SELECT job, count(*), max(ended) FROM baseline_runs GROUP BY job ORDER BY job",
                &[],
            )?
            .into_iter()
            .map(|r| JobEntry {
                job: r[0].text(),
                runs: r[1].int().max(0) as u64,
                last_ended: r[2].text(),
            })
            .collect())
    }

    /// What was new in a run (found by its key or its CI run id), by step; None when the store
    /// has no such run.
    pub fn run_new(&mut self, job: &str, run: &str) -> anyhow::Result<Option<RunDiff>> {
        let db = self.db.as_mut();
        let Some(key) = db
            .query(
                "SELECT run FROM baseline_runs WHERE job = $1 AND (run = $2 OR run_id = $2)
                 ORDER BY recorded_ns DESC LIMIT 1",
                &[job.into(), run.into()],
            )?
            .into_iter()
            .next()
            .map(|r| r[0].text())
        else {
            return Ok(None);
        };
        let mut by_step: BTreeMap<String, Vec<Behaviour>> = BTreeMap::new();
        for row in db.query(
            "SELECT step FROM baseline_run_steps WHERE job = $1 AND run = $2",
            &[job.into(), (&key).into()],
        )? {
            by_step.entry(row[0].text()).or_default();
        }
        for row in db.query(
            "SELECT step, kind, item FROM baseline_run_new WHERE job = $1 AND run = $2
             ORDER BY step, kind, item",
            &[job.into(), (&key).into()],
        )? {
            if let Some(kind) = BehaviourKind::parse(&row[1].text()) {
                by_step.entry(row[0].text()).or_default().push(Behaviour {
                    kind,
                    item: row[2].text(),
                });
            }
        }
        Ok(Some((key, by_step)))
    }

    /// Removes behaviours (a step's, a kind's, one) or, with nothing named, the whole job:
    /// what is removed is new again at the next run. Returns how many rows went.
    pub fn forget(&mut self, job: &str, what: &Forget) -> anyhow::Result<u64> {
        let db = self.db.as_mut();
        db.begin()?;
        let result = (|| {
            if what.step.is_none() && what.behaviour.is_none() && what.kind.is_none() {
                let mut n = 0;
                for table in [
                    "baseline_runs",
                    "baseline_run_steps",
                    "baseline_behaviours",
                    "baseline_run_new",
                ] {
                    n += db.execute(
                        &format!("DELETE FROM {table} WHERE job = $1"),
                        &[job.into()],
                    )?;
                }
                return Ok(n);
            }
            let mut sql = "DELETE FROM baseline_behaviours WHERE job = $1".to_string();
            let mut params: Vec<Value> = vec![job.into()];
            if let Some(step) = &what.step {
                params.push(step.into());
                sql.push_str(&format!(" AND step = ${}", params.len()));
            }
            if let Some(b) = &what.behaviour {
                params.push(b.kind.as_str().into());
                sql.push_str(&format!(" AND kind = ${}", params.len()));
                params.push((&b.item).into());
                sql.push_str(&format!(" AND item = ${}", params.len()));
            } else if let Some(kind) = what.kind {
                params.push(kind.as_str().into());
                sql.push_str(&format!(" AND kind = ${}", params.len()));
            }
            db.execute(&sql, &params)
        })();
        match result {
            Ok(n) => {
                db.commit()?;
                Ok(n)
            }
            Err(e) => {
                db.rollback();
                Err(e)
            }
        }
    }

    /// Checks the database's own consistency (SQLite's integrity check; PostgreSQL keeps its
    /// own) and the schema version; a line saying what it found.
    pub fn check(&mut self) -> anyhow::Result<String> {
        let version = schema_version(self.db.as_mut())?;
        if self.db.kind() == "sqlite" {
            let rows = self.db.query("PRAGMA integrity_check", &[])?;
            let verdict: Vec<String> = rows.iter().map(|r| r[0].text()).collect();
            if verdict != ["ok"] {
                anyhow::bail!("the database is damaged: {}", verdict.join("; "));
            }
        }
        let runs = self
            .db
            .query("SELECT count(*) FROM baseline_runs", &[])?
            .first()
            .map_or(0, |r| r[0].int());
        Ok(format!(
            "{} store: schema version {version}, {runs} run(s) recorded, consistent",
            self.db.kind()
        ))
    }
}

fn record_in(
    db: &mut dyn Database,
    run: &RunRecord,
    new: &BTreeMap<String, Vec<Behaviour>>,
    keep_runs: i64,
) -> anyhow::Result<bool> {
    let inserted = db.execute(
        "INSERT INTO baseline_runs (job, run, run_id, ended, recorded_ns)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        &[
            (&run.job).into(),
            (&run.run).into(),
            run.run_id.as_ref().into(),
            (&run.ended).into(),
            ((crate::metrics::unix_now() * 1e9) as i64).into(),
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    for (step, behaviours) in &run.steps {
        let new_here = new.get(step).map_or(0, Vec::len) as i64;
        db.execute(
            "INSERT INTO baseline_run_steps (job, run, step, new_items) VALUES ($1, $2, $3, $4)",
            &[
                (&run.job).into(),
                (&run.run).into(),
                step.into(),
                new_here.into(),
            ],
        )?;
        for b in behaviours {
            db.execute(
                "INSERT INTO baseline_behaviours (job, step, kind, item, first_seen, last_seen, runs)
                 VALUES ($1, $2, $3, $4, $5, $5, 1)
                 ON CONFLICT (job, step, kind, item) DO UPDATE
                 SET last_seen = excluded.last_seen, runs = baseline_behaviours.runs + 1",
                &[
                    (&run.job).into(),
                    step.into(),
                    b.kind.as_str().into(),
                    (&b.item).into(),
                    (&run.ended).into(),
                ],
            )?;
        }
        for b in new.get(step).into_iter().flatten() {
            db.execute(
                "INSERT INTO baseline_run_new (job, run, step, kind, item) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
                &[
                    (&run.job).into(),
                    (&run.run).into(),
                    step.into(),
                    b.kind.as_str().into(),
                    (&b.item).into(),
                ],
            )?;
        }
    }
    forget_old_runs(db, &run.job, keep_runs)?;
    Ok(true)
}

/// Runs kept per job: older ones, and behaviours none of the kept runs did, are forgotten
/// (a job whose runs each bring something the generaliser cannot tell apart would otherwise
/// grow its baseline, and the agent's copy of it, without end).
pub const MAX_RUNS_KEPT: i64 = 1_000;

fn forget_old_runs(db: &mut dyn Database, job: &str, keep_runs: i64) -> anyhow::Result<()> {
    let Some(oldest_kept) = db
        .query(
            &format!(
                "SELECT recorded_ns, ended FROM baseline_runs WHERE job = $1
                 ORDER BY recorded_ns DESC, run DESC LIMIT 1 OFFSET {}",
                keep_runs - 1
            ),
            &[job.into()],
        )?
        .into_iter()
        .next()
    else {
        return Ok(());
    };
    let (cutoff_ns, cutoff_ended) = (oldest_kept[0].int(), oldest_kept[1].text());
    for table in ["baseline_run_steps", "baseline_run_new"] {
        db.execute(
            &format!(
                "DELETE FROM {table} WHERE job = $1 AND run IN
                 (SELECT run FROM baseline_runs WHERE job = $1 AND recorded_ns < $2)"
            ),
            &[job.into(), cutoff_ns.into()],
        )?;
    }
    db.execute(
        "DELETE FROM baseline_runs WHERE job = $1 AND recorded_ns < $2",
        &[job.into(), cutoff_ns.into()],
    )?;
    db.execute(
        "DELETE FROM baseline_behaviours WHERE job = $1 AND last_seen < $2",
        &[job.into(), (&cutoff_ended).into()],
    )?;
    Ok(())
}

fn schema_version(db: &mut dyn Database) -> anyhow::Result<usize> {
    Ok(db
        .query("SELECT max(version) FROM baseline_schema", &[])?
        .first()
        .map_or(0, |r| r[0].int().max(0) as usize))
}

fn migrate(db: &mut dyn Database) -> anyhow::Result<()> {
    db.execute(
        "CREATE TABLE IF NOT EXISTS baseline_schema (version BIGINT PRIMARY KEY, applied TEXT NOT NULL)",
        &[],
    )
    .or_else(|e| {
        // Two PostgreSQL clients creating the same table at once: one fails on the type's
        // unique index; the table is there for both.
        if db.query("SELECT count(*) FROM baseline_schema", &[]).is_ok() {
            Ok(0)
        } else {
            Err(e)
        }
    })?;
    db.begin()?;
    let result = (|| {
        db.lock_for_migration()?;
        let current = schema_version(db)?;
        if current > MIGRATIONS.len() {
            anyhow::bail!(
                "the baseline database has schema version {current}, newer than this monitor's {} (upgrade the monitor)",
                MIGRATIONS.len()
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                db.execute(statement, &[])
                    .with_context(|| format!("migration {}", i + 1))?;
            }
            db.execute(
                "INSERT INTO baseline_schema (version, applied) VALUES ($1, $2)",
                &[
                    ((i + 1) as i64).into(),
                    crate::report::now_rfc3339().as_str().into(),
                ],
            )?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => db.commit(),
        Err(e) => {
            db.rollback();
            Err(e)
        }
    }
}

/// A store location as the configuration writes it, with any password hidden (for logs and
/// reports).
pub fn shown_location(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => location.to_string(),
    }
}

/// Opens the store a location names: `postgres://` or `postgresql://` URLs, else a SQLite file
/// (`sqlite://` prefix optional).
pub fn open(location: &str) -> anyhow::Result<Store> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        let db = super::postgres::Postgres::connect(location)
            .with_context(|| format!("connecting to {}", shown_location(location)))?;
        Store::new(Box::new(db))
    } else {
        let path = location.strip_prefix("sqlite://").unwrap_or(location);
        let db = super::sqlite::Sqlite::open(std::path::Path::new(path))
            .with_context(|| format!("opening the baseline database {path}"))?;
        Store::new(Box::new(db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{compare, state::Thresholds};
    use std::collections::BTreeSet;

    fn run(n: u32, extra: &[&str]) -> RunRecord {
        let mut set = BTreeSet::from([Behaviour {
            kind: BehaviourKind::Executable,
            item: "/usr/bin/node".into(),
        }]);
        for e in extra {
            set.insert(Behaviour {
                kind: BehaviourKind::Destination,
                item: e.to_string(),
            });
        }
        RunRecord {
            job: "github:acme/app/CI/build".into(),
            run: format!("github/acme/app/{n}/1/build"),
            run_id: Some(n.to_string()),
            ended: format!("2026-12-01T00:00:{n:02}Z"),
            steps: BTreeMap::from([("install".to_string(), set)]),
            truncated: BTreeSet::new(),
        }
    }

    fn new_of(c: &compare::Comparison) -> BTreeMap<String, Vec<Behaviour>> {
        c.steps
            .iter()
            .map(|s| (s.step.clone(), s.new.clone()))
            .collect()
    }

    /// The store gives back what the agent's own copy says (`Snapshot::with_run`): the two
    /// agree, run after run, through a reopen; a run is recorded once; diff and forget work.
    #[test]
    fn sqlite_store_round_trip_matches_the_in_memory_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let t = Thresholds::default();
        let mut copy = Snapshot {
            job: "github:acme/app/CI/build".into(),
            ..Default::default()
        };
        for n in 1..=4 {
            let mut store = open(path.to_str().unwrap()).unwrap();
            let r = run(
                n,
                if n == 3 {
                    &["tcp new.example:443"]
                } else {
                    &[]
                },
            );
            let snap = store.snapshot(&r.job).unwrap();
            assert_eq!(snap, copy, "run {n}");
            let c = compare::compare(&snap, &r, &t);
            assert!(store.record(&r, &new_of(&c)).unwrap());
            assert!(!store.record(&r, &new_of(&c)).unwrap(), "recorded twice");
            copy = copy.with_run(&r, &c.new_by_step(&r));
            // recorded_ns orders the runs: one per test step is enough apart.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut store = open(&format!("sqlite://{}", path.display())).unwrap();
        assert_eq!(store.snapshot(&copy.job).unwrap(), copy);
        assert!(store.check().unwrap().contains("4 run(s)"));
        let (key, diff) = store.run_new(&copy.job, "3").unwrap().unwrap();
        assert_eq!(key, "github/acme/app/3/1/build");
        assert_eq!(diff["install"][0].item, "tcp new.example:443");
        assert!(store.run_new(&copy.job, "99").unwrap().is_none());
        let gone = store
            .forget(
                &copy.job,
                &Forget {
                    behaviour: Behaviour::parse("destination:tcp new.example:443"),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(gone, 1);
        let snap = store.snapshot(&copy.job).unwrap();
        let c = compare::compare(&snap, &run(5, &["tcp new.example:443"]), &t);
        assert_eq!(c.steps[0].new.len(), 1, "forgotten, so new again");
        assert!(store.forget(&copy.job, &Forget::default()).unwrap() > 0);
        assert!(store.jobs().unwrap().is_empty());
    }

    /// Past the runs kept, the oldest runs go, and with them behaviours no kept run did; what
    /// the kept runs did stays.
    #[test]
    fn old_runs_and_what_only_they_did_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path().join("b.db").to_str().unwrap())
            .unwrap()
            .keeping_runs(3);
        for n in 1..=6 {
            let unique = format!("tcp run{n}.example:443");
            let r = run(n, &[unique.as_str()]);
            assert!(store.record(&r, &BTreeMap::new()).unwrap());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let snap = store.snapshot("github:acme/app/CI/build").unwrap();
        assert_eq!(snap.runs, 3);
        let runs: Vec<&str> = snap
            .recent
            .iter()
            .map(|r| r.run_id.as_deref().unwrap())
            .collect();
        assert_eq!(runs, ["4", "5", "6"]);
        let items: Vec<&str> = snap.known["install"]
            .keys()
            .map(|b| b.item.as_str())
            .collect();
        assert_eq!(
            items,
            [
                "tcp run4.example:443",
                "tcp run5.example:443",
                "tcp run6.example:443",
                "/usr/bin/node"
            ],
            "{items:?}"
        );
        assert_eq!(
            snap.known["install"].values().map(|s| s.runs).max(),
            Some(6)
        );
    }
}
