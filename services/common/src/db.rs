//! PostgreSQL pool, database creation and migrations.

use std::time::Duration;

use sqlx::Postgres;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::amqp::Backoff;

/// The tables every service has (outbox, inbox), tracked apart from the
/// service's own migrations so both can evolve independently.
static MESSAGING: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens the pool, creating the database first if it does not exist. Waits
/// (with backoff) for PostgreSQL to come up, so a service can start first.
pub async fn connect(url: &str, max_connections: u32) -> PgPool {
    let mut backoff = Backoff::new();
    loop {
        match try_connect(url, max_connections).await {
            Ok(pool) => return pool,
            Err(error) => {
                tracing::warn!(%error, "cannot open the database, retrying");
                backoff.wait().await;
            }
        }
    }
}

async fn try_connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    if !Postgres::database_exists(url).await? {
        // Several replicas may race here; losing the race is fine.
        if let Err(error) = Postgres::create_database(url).await
            && !Postgres::database_exists(url).await?
        {
            return Err(error);
        }
    }
    PgPoolOptions::new().max_connections(max_connections).acquire_timeout(Duration::from_secs(5)).connect(url).await
}

/// Runs the shared messaging migrations, then the service's own. sqlx takes
/// an advisory lock, so replicas starting together apply each migration once.
pub async fn migrate(pool: &PgPool, service: &Migrator) -> Result<(), DbError> {
    let mut messaging = Migrator { migrations: MESSAGING.migrations.clone(), ..Migrator::DEFAULT };
    messaging.dangerous_set_table_name("_saga_messaging_migrations");
    messaging.run(pool).await?;
    service.run(pool).await?;
    Ok(())
}

/// Whether an error means the database cannot be reached (as opposed to a
/// problem with this particular statement).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code == "57P01" || code == "57P02" || code == "57P03"),
        _ => false,
    }
}

/// Whether an error means the statement lost a race with a concurrent
/// transaction (deadlock, serialization failure, or a unique key another
/// transaction inserted first) and can simply be run again.
pub fn is_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001" | "23505")))
}
