//! A fresh, migrated database file per test, in a temporary directory removed afterwards.

use tempfile::TempDir;

use crate::migrate::run_migrations;
use crate::pool::{SqliteSettings, SqliteStore, Target};

/// A test's own database. Keep it alive for as long as the store is used.
#[derive(Debug)]
pub struct TestDatabase {
    directory: TempDir,
}

impl TestDatabase {
    /// A place for a database file, not created yet (a server creates and migrates it).
    pub fn empty() -> Self {
        let directory = tempfile::Builder::new()
            .prefix("d2-sqlite-test")
            .tempdir()
            .expect("a temporary directory");
        Self { directory }
    }

    /// Creates and migrates a database file.
    pub async fn new() -> (Self, SqliteStore) {
        let db = Self::empty();
        let store = SqliteStore::connect(&db.settings())
            .await
            .expect("the test database opens");
        run_migrations(&store).await.expect("migrations apply");
        (db, store)
    }

    /// The database file.
    pub fn path(&self) -> std::path::PathBuf {
        self.directory.path().join("d2.sqlite")
    }

    /// `sqlite://PATH` of the database file.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path().display())
    }

    /// Settings for another store on the same file (another process's view of it).
    pub fn settings(&self) -> SqliteSettings {
        SqliteSettings::new(Target::File(self.path()))
    }
}
