//! Store errors: what the caller did wrong, or what the database did.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://…")]
    Url(String),
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("the session's lease was taken over by another worker")]
    Fenced,
    #[error("quota of {limit} concurrent sandboxes reached")]
    Quota { limit: i64 },
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl Error {
    /// Maps a unique-constraint violation to [`Error::Conflict`] with `what`.
    pub(crate) fn unique(e: sqlx::Error, what: &str) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => Self::Conflict(what.to_owned()),
            _ => Self::Db(e),
        }
    }
}
