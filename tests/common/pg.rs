//! A fresh PostgreSQL database per test on the real server (by default
//! `postgres://postgres@127.0.0.1:5432/test`, or `ALERTRELAY_TEST_POSTGRES`),
//! dropped afterwards, even when the test panics.
//!
//! When the server cannot be reached, `TestDb::create` prints one line
//! saying why (`SKIPPED <test>: ...`, past the test harness's output
//! capture, so it shows in every run) and the test skips. When
//! `ALERTRELAY_REQUIRE_POSTGRES=1` (`.ci/run` sets it once `pg_isready`
//! answered), the test fails with the reason instead: on a machine with
//! the server, a PostgreSQL test that cannot connect is a failure.

use sqlx::Connection;

/// The maintenance database tests connect to in order to create theirs.
pub fn admin_url() -> String {
    std::env::var("ALERTRELAY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database `alertrelay_test_<random>` that lives as long as this value.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates the database; or, when the server cannot be reached, fails
    /// the test if PostgreSQL is required, else prints why and returns None.
    pub async fn create(test: &str) -> Option<TestDb> {
        let mut conn = server(test).await?;
        let name = format!("alertrelay_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE on the test server");
        let _ = conn.close().await;
        let mut url = url::Url::parse(&admin_url()).expect("a postgres:// URL");
        url.set_path(&name);
        Some(TestDb {
            name,
            url: url.to_string(),
        })
    }
}

/// A connection to the test server's maintenance database (`admin_url`);
/// or, when the server cannot be reached, fails the test if PostgreSQL is
/// required, else prints why and returns None.
pub async fn server(test: &str) -> Option<sqlx::PgConnection> {
    let admin = admin_url();
    let connect = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sqlx::PgConnection::connect(&admin),
    )
    .await;
    match connect {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => skip(
            test,
            &format!("PostgreSQL is not reachable at {admin}: {e}"),
        ),
        Err(_) => skip(
            test,
            &format!("PostgreSQL at {admin} did not answer within 5 s"),
        ),
    }
}

/// Whether the run must have PostgreSQL (`ALERTRELAY_REQUIRE_POSTGRES`
/// set to anything but empty or `0`).
pub fn required() -> bool {
    std::env::var("ALERTRELAY_REQUIRE_POSTGRES").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Fails the test when PostgreSQL is required, or else prints one line
/// saying why it is skipped.
fn skip<T>(test: &str, why: &str) -> Option<T> {
    use std::io::Write;
    assert!(
        !required(),
        "{test}: ALERTRELAY_REQUIRE_POSTGRES is set, but {why}"
    );
    // Straight to stderr: `eprintln!` inside a test is captured and only
    // shown when the test fails, and a skipped test passes.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (ALERTRELAY_REQUIRE_POSTGRES=1 makes this a failure)"
    );
    None
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // A runtime of its own on a thread of its own: this also runs while
        // a panicking test unwinds inside the test's runtime.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}
