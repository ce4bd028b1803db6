//! The `users` table (personal accounts for the console), written once for
//! both backends. The node decides every value (`node::users`); these
//! statements only read and store a row.

use super::*;

/// The columns of a user row, in `UserRow`'s order.
macro_rules! user_columns {
    () => {
        "name, role, state, password_hash, totp_secret, totp_last_step, enrol_code_hash, \
         enrol_expires_ms, failures, locked_until_ms, created_at_ms, created_by, last_login_ms, language"
    };
}

async fn user(c: Conn<'_>, name: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(sql!(
        c,
        fetch_optional(
            concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1"),
            name
        )
    ))
}

impl Store {
    /// Every account, by name.
    pub async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        Ok(sql!(
            self.reader().await?.conn(),
            fetch_all(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users ORDER BY name"
            ))
        ))
    }

    /// One account by name.
    pub async fn user(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        user(self.reader().await?.conn(), name).await
    }
}

impl Tx {
    /// One account by name, inside this transaction.
    pub async fn user(&mut self, name: &str) -> Result<Option<UserRow>, StoreError> {
        user(self.conn(), name).await
    }

    /// The account whose one-time enrolment code hashes to `code_hash`.
    pub async fn user_by_enrol_code(
        &mut self,
        code_hash: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        Ok(sql!(
            self.conn(),
            fetch_optional(
                concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE enrol_code_hash = $1"
                ),
                code_hash
            )
        ))
    }

    /// Adds an account; false when the name is taken.
    pub async fn insert_user(&mut self, u: &UserRow) -> Result<bool, StoreError> {
        let n = sql!(
            self.conn(),
            execute(
                concat!(
                    "INSERT INTO users (",
                    user_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                     ON CONFLICT (name) DO NOTHING"
                ),
                &u.name,
                &u.role,
                &u.state,
                &u.password_hash,
                &u.totp_secret,
                u.totp_last_step,
                &u.enrol_code_hash,
                u.enrol_expires_ms,
                u.failures,
                u.locked_until_ms,
                u.created_at_ms,
                &u.created_by,
                u.last_login_ms,
                &u.language,
            )
        );
        Ok(n == 1)
    }

    /// Stores every changeable column of an existing account; false when
    /// there is no such account.
    pub async fn save_user(&mut self, u: &UserRow) -> Result<bool, StoreError> {
        let n = sql!(
            self.conn(),
            execute(
                "UPDATE users SET role = $2, state = $3, password_hash = $4, totp_secret = $5,
                     totp_last_step = $6, enrol_code_hash = $7, enrol_expires_ms = $8,
                     failures = $9, locked_until_ms = $10, last_login_ms = $11, language = $12
                 WHERE name = $1",
                &u.name,
                &u.role,
                &u.state,
                &u.password_hash,
                &u.totp_secret,
                u.totp_last_step,
                &u.enrol_code_hash,
                u.enrol_expires_ms,
                u.failures,
                u.locked_until_ms,
                u.last_login_ms,
                &u.language,
            )
        );
        Ok(n == 1)
    }
}
