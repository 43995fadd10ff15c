//! The embedded store: one SQLite file (owner-only) in write-ahead-log mode with full syncs, so
//! a killed agent leaves the last committed run and an intact database; a second process (the
//! CLI, another agent) waits for the write lock rather than failing.

use std::path::Path;

use anyhow::Context as _;
use rusqlite::{types::ValueRef, Connection};

use super::store::{Database, Value};

pub struct Sqlite {
    connection: Connection,
}

/// How long a writer waits for another's transaction.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Sqlite {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                use std::os::unix::fs::DirBuilderExt as _;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        let fresh = !path.exists();
        let connection = Connection::open(path)?;
        if fresh {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        connection.busy_timeout(BUSY_WAIT)?;
        // WAL: readers do not block the writer; FULL: a committed run survives a power cut.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        Ok(Sqlite { connection })
    }
}

/// `$1` → `?1`: the statements are written once for both databases.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

fn params(values: &[Value]) -> Vec<rusqlite::types::Value> {
    values
        .iter()
        .map(|v| match v {
            Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
            Value::Int(i) => rusqlite::types::Value::Integer(*i),
            Value::Null => rusqlite::types::Value::Null,
        })
        .collect()
}

impl Database for Sqlite {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn begin(&mut self) -> anyhow::Result<()> {
        self.connection.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    fn commit(&mut self) -> anyhow::Result<()> {
        self.connection.execute_batch("COMMIT")?;
        Ok(())
    }

    fn rollback(&mut self) {
        let _ = self.connection.execute_batch("ROLLBACK");
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> anyhow::Result<u64> {
        let mut statement = self.connection.prepare_cached(&sqlite_sql(sql))?;
        let n = statement.execute(rusqlite::params_from_iter(params(values)))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> anyhow::Result<Vec<Vec<Value>>> {
        let mut statement = self.connection.prepare_cached(&sqlite_sql(sql))?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params(values)))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Real(f) => Value::Int(f as i64),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(values);
        }
        Ok(out)
    }

    fn lock_for_migration(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
