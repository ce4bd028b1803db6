//! The `database` setting: a SQLite file or a PostgreSQL URL, parsed
//! once, and shown without its password.

use std::path::{Path, PathBuf};

/// Where a node keeps its data: `database` in node.toml. A path or
/// `sqlite://PATH` is a SQLite file; `postgres://…` (or `postgresql://…`)
/// a PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Database {
    /// Parses the setting; relative SQLite paths are resolved by `resolve`
    /// (against the configuration file's folder).
    pub fn parse(setting: &str, resolve: impl Fn(&str) -> PathBuf) -> Result<Self, String> {
        let s = setting.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            let url = url::Url::parse(s).map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
            if url.path().trim_start_matches('/').is_empty() {
                return Err("the PostgreSQL URL names no database (postgres://HOST/DBNAME)".into());
            }
            return Ok(Database::Postgres(s.to_owned()));
        }
        let path = s.strip_prefix("sqlite://").unwrap_or(s);
        if path.is_empty() {
            return Err("empty: a SQLite file path or a postgres:// URL".into());
        }
        if s.contains("://") && !s.starts_with("sqlite://") {
            return Err(format!(
                "unknown scheme in {:?}: use a file path, sqlite://PATH or postgres://…",
                redact(s)
            ));
        }
        Ok(Database::Sqlite(resolve(path)))
    }

    /// The SQLite file, when the node runs on SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(p) => Some(p),
            Database::Postgres(_) => None,
        }
    }

    /// For messages: the file path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Database::Sqlite(p) => p.display().to_string(),
            Database::Postgres(u) => redact(u),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({})", self.display())
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// A URL with its password (if any) replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Database, String> {
        Database::parse(s, |p: &str| Path::new("/etc/alertrelay").join(p))
    }

    #[test]
    fn the_database_setting_names_a_file_or_a_postgres_url() {
        assert_eq!(
            parse("node.db").unwrap(),
            Database::Sqlite("/etc/alertrelay/node.db".into())
        );
        assert_eq!(
            parse("sqlite:///var/lib/alertrelay/node.db").unwrap(),
            Database::Sqlite("/var/lib/alertrelay/node.db".into())
        );
        let pg = parse("postgres://alertrelay:s3cret@db:5432/alertrelay").unwrap();
        assert_eq!(
            pg,
            Database::Postgres("postgres://alertrelay:s3cret@db:5432/alertrelay".into())
        );
        assert!(pg.sqlite_path().is_none());
        // The password never shows in messages.
        assert_eq!(pg.display(), "postgres://alertrelay:***@db:5432/alertrelay");
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert!(matches!(
            parse("postgresql://db/alertrelay").unwrap(),
            Database::Postgres(_)
        ));
        let err = parse("postgres://db").unwrap_err();
        assert!(err.contains("names no database"), "{err}");
        let err = parse("mysql://u:pw@db/x").unwrap_err();
        assert!(
            err.contains("unknown scheme") && !err.contains("pw"),
            "{err}"
        );
        assert!(parse("").is_err());
    }
}
