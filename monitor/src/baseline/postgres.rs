//! The shared store: PostgreSQL, for runners that take the same jobs. Every wait is bounded (a
//! connection in 3 s, a statement in 10 s): an unreachable or stuck database makes the agent
//! keep the run on disk for later, never stalls the pipeline for long.

use postgres::{types::Type, Client, NoTls};

use super::store::{Database, Value};

pub struct Postgres {
    client: Client,
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl Postgres {
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        let mut config: postgres::Config = url.parse()?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(30))
            .application_name("monitor-baseline");
        let mut client = config.connect(NoTls)?;
        client.batch_execute("SET statement_timeout = 10000; SET lock_timeout = 10000")?;
        Ok(Postgres { client })
    }
}

fn params(values: &[Value]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    values
        .iter()
        .map(|v| -> Box<dyn postgres::types::ToSql + Sync> {
            match v {
                Value::Text(s) => Box::new(s.clone()),
                Value::Int(i) => Box::new(*i),
                Value::Null => Box::new(Option::<String>::None),
            }
        })
        .collect()
}

impl Database for Postgres {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn begin(&mut self) -> anyhow::Result<()> {
        self.client.batch_execute("BEGIN")?;
        Ok(())
    }

    fn commit(&mut self) -> anyhow::Result<()> {
        self.client.batch_execute("COMMIT")?;
        Ok(())
    }

    fn rollback(&mut self) {
        let _ = self.client.batch_execute("ROLLBACK");
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> anyhow::Result<u64> {
        let boxed = params(values);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            boxed.iter().map(|b| b.as_ref()).collect();
        Ok(self.client.execute(sql, &refs)?)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> anyhow::Result<Vec<Vec<Value>>> {
        let boxed = params(values);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            boxed.iter().map(|b| b.as_ref()).collect();
        let rows = self.client.query(sql, &refs)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (i, column) in row.columns().iter().enumerate() {
                let ty = column.type_();
                values.push(if *ty == Type::INT8 {
                    row.get::<_, Option<i64>>(i).map_or(Value::Null, Value::Int)
                } else if *ty == Type::INT4 {
                    row.get::<_, Option<i32>>(i)
                        .map_or(Value::Null, |n| Value::Int(n.into()))
                } else {
                    row.get::<_, Option<String>>(i)
                        .map_or(Value::Null, Value::Text)
                });
            }
            out.push(values);
        }
        Ok(out)
    }

    fn lock_for_migration(&mut self) -> anyhow::Result<()> {
        // Any fixed number: the store's own migration lock.
        self.client
            .batch_execute("SELECT pg_advisory_xact_lock(726590213)")?;
        Ok(())
    }
}
