//! Choosing the ledger by configuration: a [`LedgerUrl`] names a ledger, [`AnyLedger`] is
//! whichever one it names, [`default_ledger_path`] is where the embedded file lives unless
//! configured otherwise.

use crate::redact::redact_url;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

#[cfg(feature = "postgres")]
use super::PostgresLedger;
#[cfg(feature = "sqlite")]
use super::SqliteLedger;
use super::{GroupTotal, Ledger, LedgerError, LedgerQuery, MemoryLedger, RankBy, UsageEvent};

/// The environment variable naming the ledger: any text [`LedgerUrl::parse`] accepts.
pub const LEDGER_URL_VAR: &str = "TOKEN_BUDGET_LEDGER";

/// The environment variable naming the directory of the default ledger file.
pub const HOME_VAR: &str = "TOKEN_BUDGET_HOME";

/// The PostgreSQL schema a `postgres://` ledger uses when the URL has no `?namespace=`.
pub const DEFAULT_POSTGRES_NAMESPACE: &str = "token_budget";

/// The file name of the default ledger.
const DEFAULT_FILE: &str = "ledger.sqlite3";

/// What the error messages list.
const ACCEPTED: &str = "accepted: `memory:`, `sqlite:PATH`, `sqlite://PATH`, a file path, \
    or `postgres://…` / `postgresql://…` (optionally with `?namespace=NAME`)";

/// The default location of the embedded ledger file:
///
/// 1. `$TOKEN_BUDGET_HOME/ledger.sqlite3` when `TOKEN_BUDGET_HOME` is set;
/// 2. else `$XDG_DATA_HOME/token-budget/ledger.sqlite3` when `XDG_DATA_HOME` is set to an
///    absolute path (the XDG base directory specification ignores relative ones);
/// 3. else `$HOME/.local/share/token-budget/ledger.sqlite3` when `HOME` is set;
/// 4. else `./token-budget/ledger.sqlite3`, relative to the working directory.
///
/// Variables set to an empty value count as unset. Nothing is created here: opening the ledger
/// creates the missing directories.
pub fn default_ledger_path() -> PathBuf {
    default_path_from(|name| std::env::var_os(name))
}

fn default_path_from(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(home) = set(HOME_VAR) {
        return home.join(DEFAULT_FILE);
    }
    if let Some(data) = set("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return data.join("token-budget").join(DEFAULT_FILE);
    }
    if let Some(home) = set("HOME") {
        return home
            .join(".local")
            .join("share")
            .join("token-budget")
            .join(DEFAULT_FILE);
    }
    Path::new(".").join("token-budget").join(DEFAULT_FILE)
}

/// Which ledger to use, parsed from text.
///
/// | text | ledger |
/// |---|---|
/// | `memory:` | [`MemoryLedger`]: this process only, gone when it exits |
/// | `sqlite:PATH`, `sqlite://PATH`, or a bare path such as `./ledger.sqlite3` | `SqliteLedger`, the file at `PATH` (missing parent directories are created on open) |
/// | `postgres://…`, `postgresql://…` | `PostgresLedger`; `?namespace=NAME` picks the PostgreSQL schema, default [`DEFAULT_POSTGRES_NAMESPACE`] |
///
/// `sqlite:///var/lib/tb/ledger.sqlite3` and `sqlite:/var/lib/tb/ledger.sqlite3` are the same
/// absolute path; `sqlite://data/ledger.sqlite3` and `sqlite:data/ledger.sqlite3` are relative
/// to the working directory. A text is a bare path when it does not start with a scheme (a
/// letter, then one or more letters, digits, `+`, `-` or `.`, then `:`), so `C:\ledger.sqlite3`
/// is a path; prefix `./` to a relative path that would otherwise read as a scheme. `~` is not
/// expanded. Surrounding whitespace is ignored. A PostgreSQL URL is parsed with the `url` crate
/// (percent-encoding, user info, query pairs): its `namespace` parameter is taken out, the
/// other parameters must be tokio-postgres's own (`sslmode`, `connect_timeout`, `host`, ...),
/// and tokio-postgres checks their values here. An unknown parameter is an error that lists
/// the accepted ones; so is any `?…` after `sqlite:`.
///
/// Without configuration, [`LedgerUrl::from_env`] names the embedded SQLite file at
/// [`default_ledger_path`]; the variable [`LEDGER_URL_VAR`] (`TOKEN_BUDGET_LEDGER`) names
/// another ledger.
///
/// ```
/// use std::path::PathBuf;
/// use budget_core::ledger::LedgerUrl;
///
/// assert_eq!(LedgerUrl::parse("memory:")?, LedgerUrl::Memory);
/// assert_eq!(
///     LedgerUrl::parse("sqlite:///var/lib/tb/ledger.sqlite3")?,
///     LedgerUrl::Sqlite(PathBuf::from("/var/lib/tb/ledger.sqlite3"))
/// );
/// let pg = LedgerUrl::parse("postgres://tb:secret@db/books?namespace=fleet")?;
/// assert_eq!(pg.to_string(), "postgres://tb:***@db/books?namespace=fleet");
/// assert!(LedgerUrl::parse("redis://cache").is_err());
/// # Ok::<(), budget_core::ledger::LedgerUrlError>(())
/// ```
///
/// `Display` gives a text that parses back to the same value, with any password replaced by
/// `***`; `Debug` hides the password too. Errors name the offending text, password hidden.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerUrl {
    /// `memory:`: a [`MemoryLedger`].
    Memory,
    /// `sqlite:PATH`, `sqlite://PATH` or a bare path: the SQLite ledger file at this path.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`: a PostgreSQL ledger.
    Postgres {
        /// The URL handed to tokio-postgres: the given one without its `namespace` parameter.
        url: String,
        /// The PostgreSQL schema holding the tables.
        namespace: String,
    },
}

/// A ledger text that names no usable ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerUrlError {
    /// The text is empty (or only whitespace).
    #[error("no ledger given (the text is empty); {ACCEPTED}")]
    Empty,
    /// The text starts with a scheme no ledger has.
    #[error("unknown ledger scheme `{scheme}:` in {text:?}; {ACCEPTED}")]
    UnknownScheme {
        /// The scheme, as written.
        scheme: String,
        /// The whole text, password hidden.
        text: String,
    },
    /// A known scheme with something wrong after it.
    #[error("invalid ledger {text:?}: {reason}; {ACCEPTED}")]
    Invalid {
        /// The whole text, password hidden.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// An environment variable holds text that is not valid Unicode.
    #[error("{variable} is not valid Unicode: {value:?}")]
    NotUnicode {
        /// The variable.
        variable: &'static str,
        /// Its value, with invalid bytes replaced and any password hidden.
        value: String,
    },
    /// The text came from an environment variable and is invalid.
    #[error("{variable}: {source}")]
    InVariable {
        /// The variable.
        variable: &'static str,
        /// What is wrong with its value.
        source: Box<LedgerUrlError>,
    },
}

/// A ledger that could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenLedgerError {
    /// The text names no usable ledger.
    #[error(transparent)]
    Url(#[from] LedgerUrlError),
    /// The ledger's backend was left out of this build.
    #[error("cannot open the ledger {url}: budget-core was built without feature {feature}")]
    FeatureDisabled {
        /// The cargo feature of budget-core that the backend needs.
        feature: &'static str,
        /// The ledger, as [`LedgerUrl`] displays it.
        url: String,
    },
    /// The directory of a SQLite ledger file could not be created.
    #[error("cannot create the directory {} for the ledger file {}: {source}", dir.display(), file.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The ledger file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The backend refused: unreachable server, not a ledger file, newer schema, ...
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl LedgerUrl {
    /// Parses a ledger text: `memory:`, `sqlite:PATH`, `sqlite://PATH`, a bare path,
    /// `postgres://…` or `postgresql://…` (see [`LedgerUrl`]).
    ///
    /// # Errors
    ///
    /// [`LedgerUrlError`] when the text is empty, starts with an unknown scheme, or a known
    /// scheme is followed by something unusable; the error names the text (password hidden)
    /// and lists the accepted forms.
    pub fn parse(text: &str) -> Result<LedgerUrl, LedgerUrlError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(LedgerUrlError::Empty);
        }
        let Some((scheme, rest)) = split_scheme(text) else {
            if ["memory", "sqlite", "postgres", "postgresql"]
                .iter()
                .any(|name| text.eq_ignore_ascii_case(name))
            {
                return Err(invalid(
                    text,
                    format!("did you mean `{text}:`? (write `./{text}` for a file of that name)"),
                ));
            }
            return sqlite_path(text, text);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "memory" if rest.is_empty() || rest == "//" => Ok(LedgerUrl::Memory),
            "memory" => Err(invalid(text, "`memory:` takes nothing after the colon")),
            "sqlite" => match sqlite_path(text, rest.strip_prefix("//").unwrap_or(rest))? {
                _ if rest.contains('?') => Err(invalid(
                    text,
                    "a SQLite ledger takes no options (`?…`); write a file name holding `?` \
                     as a bare path",
                )),
                url => Ok(url),
            },
            "postgres" | "postgresql" => parse_postgres(text, rest),
            _ => Err(LedgerUrlError::UnknownScheme {
                scheme: scheme.to_owned(),
                text: redact_url(text),
            }),
        }
    }

    /// The ledger named by [`LEDGER_URL_VAR`] (`TOKEN_BUDGET_LEDGER`); when it is unset or
    /// empty, the SQLite file at [`default_ledger_path`].
    ///
    /// # Errors
    ///
    /// [`LedgerUrlError::InVariable`] when the variable's text is invalid,
    /// [`LedgerUrlError::NotUnicode`] when it is not Unicode.
    pub fn from_env() -> Result<LedgerUrl, LedgerUrlError> {
        from_vars(|name| std::env::var_os(name))
    }

    /// Opens the ledger this names: creates a SQLite file's missing parent directories and
    /// opens (or creates) the file, or connects to PostgreSQL (which must run within a Tokio
    /// runtime), or makes an empty memory ledger. Opening a SQLite file blocks the calling
    /// thread while the file is opened and its schema migrated.
    ///
    /// # Errors
    ///
    /// [`OpenLedgerError`]: the backend was left out of this build, a directory could not be
    /// created, or the backend refused (its [`LedgerError`] names the file or URL).
    pub async fn open(&self) -> Result<AnyLedger, OpenLedgerError> {
        match self {
            LedgerUrl::Memory => Ok(AnyLedger::Memory(MemoryLedger::new())),
            LedgerUrl::Sqlite(path) => open_sqlite(self, path),
            LedgerUrl::Postgres { url, namespace } => open_postgres(self, url, namespace).await,
        }
    }
}

impl std::str::FromStr for LedgerUrl {
    type Err = LedgerUrlError;

    fn from_str(text: &str) -> Result<LedgerUrl, LedgerUrlError> {
        LedgerUrl::parse(text)
    }
}

impl fmt::Display for LedgerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerUrl::Memory => f.write_str("memory:"),
            LedgerUrl::Sqlite(path) => {
                let path = path.display().to_string();
                // `sqlite://` would be taken as the separator of a path starting with `//`.
                let sep = if path.starts_with("//") { "//" } else { "" };
                write!(f, "sqlite:{sep}{path}")
            }
            LedgerUrl::Postgres { url, namespace } => {
                let sep = if url.contains('?') { '&' } else { '?' };
                write!(f, "{}{sep}namespace={namespace}", redact_url(url))
            }
        }
    }
}

impl fmt::Debug for LedgerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerUrl::Memory => f.write_str("Memory"),
            LedgerUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            LedgerUrl::Postgres { url, namespace } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url))
                .field("namespace", namespace)
                .finish(),
        }
    }
}

fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Result<LedgerUrl, LedgerUrlError> {
    match var(LEDGER_URL_VAR).map(OsString::into_string) {
        None => Ok(LedgerUrl::Sqlite(default_path_from(var))),
        Some(Ok(text)) if text.trim().is_empty() => Ok(LedgerUrl::Sqlite(default_path_from(var))),
        Some(Ok(text)) => LedgerUrl::parse(&text).map_err(|e| LedgerUrlError::InVariable {
            variable: LEDGER_URL_VAR,
            source: Box::new(e),
        }),
        Some(Err(raw)) => Err(LedgerUrlError::NotUnicode {
            variable: LEDGER_URL_VAR,
            value: redact_url(&raw.to_string_lossy()),
        }),
    }
}

/// `(scheme, rest)` when `text` starts with `scheme:`; a one-letter scheme is a drive letter.
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (valid && scheme.len() >= 2).then_some((scheme, rest))
}

fn invalid(text: &str, reason: impl Into<String>) -> LedgerUrlError {
    LedgerUrlError::Invalid {
        text: redact_url(text),
        reason: reason.into(),
    }
}

fn sqlite_path(text: &str, path: &str) -> Result<LedgerUrl, LedgerUrlError> {
    if path.is_empty() {
        return Err(invalid(text, "no file path after `sqlite:`"));
    }
    if path == ":memory:" || path.starts_with("file:") {
        // Each of the ledger's connections (writer, reader) would get its own database.
        return Err(invalid(
            text,
            "SQLite memory databases and `file:` URIs are not supported: use `memory:` for a \
             ledger in memory, or a file path",
        ));
    }
    Ok(LedgerUrl::Sqlite(PathBuf::from(path)))
}

/// The query parameters a PostgreSQL ledger URL accepts: `namespace`, then tokio-postgres's.
const POSTGRES_OPTIONS: &[&str] = &[
    "namespace",
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

fn parse_postgres(text: &str, rest: &str) -> Result<LedgerUrl, LedgerUrlError> {
    let Some(after) = rest.strip_prefix("//") else {
        return Err(invalid(text, "a PostgreSQL URL starts with `postgres://`"));
    };
    if after.is_empty() || after == "?" {
        return Err(invalid(text, "no host or database after `postgres://`"));
    }
    let mut url = url::Url::parse(text).map_err(|e| {
        let hint = if after.contains(',') {
            " (give several hosts as `?host=h1,h2&port=p1,p2`)"
        } else {
            ""
        };
        invalid(text, format!("not a valid URL: {e}{hint}"))
    })?;
    let mut namespace = None;
    let mut kept = Vec::new();
    let query = url.query().unwrap_or_default().to_owned();
    for raw in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = url::form_urlencoded::parse(raw.as_bytes())
            .next()
            .unwrap_or_default();
        if !POSTGRES_OPTIONS.contains(&key.as_ref()) {
            return Err(invalid(
                text,
                format!(
                    "unknown option {key:?}; accepted: {}",
                    POSTGRES_OPTIONS.join(", ")
                ),
            ));
        }
        if key != "namespace" {
            kept.push(raw);
            continue;
        }
        if namespace.is_some() {
            return Err(invalid(text, "`namespace` is given twice"));
        }
        if !valid_namespace(&value) {
            return Err(invalid(
                text,
                format!(
                    "invalid namespace {value:?}: use lower-case letters, digits and '_' (at \
                     most 63 bytes, not starting with a digit or pg_)"
                ),
            ));
        }
        namespace = Some(value.into_owned());
    }
    url.set_query((!kept.is_empty()).then(|| kept.join("&")).as_deref());
    let url: String = url.into();
    // tokio-postgres checks its own parameters' values (ports, timeouts, modes) now rather
    // than when the ledger first connects.
    #[cfg(feature = "postgres")]
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| invalid(text, format!("tokio-postgres refuses it: {e}")))?;
    Ok(LedgerUrl::Postgres {
        url,
        namespace: namespace.unwrap_or_else(|| DEFAULT_POSTGRES_NAMESPACE.to_owned()),
    })
}

/// Whether `ns` is a PostgreSQL schema name the ledger accepts (lower-case letters, digits and
/// `_`, at most 63 bytes, not starting with a digit or `pg_`).
pub(super) fn valid_namespace(ns: &str) -> bool {
    let mut chars = ns.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && ns.len() <= 63
        && !ns.starts_with("pg_")
}

#[cfg(feature = "sqlite")]
fn open_sqlite(_: &LedgerUrl, path: &Path) -> Result<AnyLedger, OpenLedgerError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenLedgerError::CreateDir {
            dir: dir.to_path_buf(),
            file: path.to_path_buf(),
            source,
        })?;
    }
    Ok(AnyLedger::Sqlite(SqliteLedger::open(path)?))
}

#[cfg(not(feature = "sqlite"))]
fn open_sqlite(url: &LedgerUrl, _: &Path) -> Result<AnyLedger, OpenLedgerError> {
    Err(OpenLedgerError::FeatureDisabled {
        feature: "sqlite",
        url: url.to_string(),
    })
}

#[cfg(feature = "postgres")]
async fn open_postgres(
    _: &LedgerUrl,
    conn: &str,
    namespace: &str,
) -> Result<AnyLedger, OpenLedgerError> {
    Ok(AnyLedger::Postgres(
        PostgresLedger::connect(conn, namespace).await?,
    ))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(url: &LedgerUrl, _: &str, _: &str) -> Result<AnyLedger, OpenLedgerError> {
    Err(OpenLedgerError::FeatureDisabled {
        feature: "postgres",
        url: url.to_string(),
    })
}

/// Whichever ledger the configuration names: the backends' [`Ledger`] behind one type, so a
/// program (and a [`Budget`](crate::Budget)) is written once and its ledger chosen by a
/// [`LedgerUrl`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use budget_core::ledger::{AnyLedger, Ledger, LedgerQuery};
///
/// let ledger = AnyLedger::open("memory:").await?;
/// assert_eq!(ledger.to_string(), "memory (this process only)");
/// assert!(ledger.totals(&LedgerQuery::default()).await?.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyLedger {
    /// `memory:`.
    Memory(MemoryLedger),
    /// A SQLite file.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteLedger),
    /// A PostgreSQL schema.
    #[cfg(feature = "postgres")]
    Postgres(PostgresLedger),
}

impl AnyLedger {
    /// Parses `url` ([`LedgerUrl::parse`]) and opens the ledger it names
    /// ([`LedgerUrl::open`]).
    ///
    /// # Errors
    ///
    /// [`OpenLedgerError`]: an invalid text, a backend left out of this build, a directory
    /// that could not be created, or the backend's own error.
    pub async fn open(url: &str) -> Result<AnyLedger, OpenLedgerError> {
        LedgerUrl::parse(url)?.open().await
    }

    /// Opens the ledger named by `TOKEN_BUDGET_LEDGER`, by default the SQLite file at
    /// [`default_ledger_path`] ([`LedgerUrl::from_env`]).
    ///
    /// # Errors
    ///
    /// As [`AnyLedger::open`]; an invalid variable is [`LedgerUrlError::InVariable`].
    pub async fn from_env() -> Result<AnyLedger, OpenLedgerError> {
        LedgerUrl::from_env()?.open().await
    }

    /// The backend's name: `memory`, `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyLedger::Memory(_) => "memory",
            #[cfg(feature = "sqlite")]
            AnyLedger::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            AnyLedger::Postgres(_) => "postgres",
        }
    }

    /// Waits until every event handed over before this call is stored, events whose `record`
    /// future was dropped included (see [`Ledger::flush`]). The backend's flush starts when this
    /// is called. Dropping a SQLite ledger also commits what its writer still holds; dropping a
    /// PostgreSQL ledger stores what it still holds within a bounded wait.
    ///
    /// # Errors
    ///
    /// The backend's [`LedgerError`] when the pending events could not be stored.
    pub fn flush(&self) -> impl std::future::Future<Output = Result<(), LedgerError>> + Send + '_ {
        match self {
            AnyLedger::Memory(_) => Handed::Ready(Some(Ok(()))),
            #[cfg(feature = "sqlite")]
            AnyLedger::Sqlite(l) => Handed::Waiting(Box::pin(l.flush())),
            #[cfg(feature = "postgres")]
            AnyLedger::Postgres(l) => Handed::Waiting(Box::pin(Ledger::flush(l))),
        }
    }
}

/// A backend's `record` or `flush`, started when the call was made: the memory ledger's answer
/// is already known; a durable ledger's future is boxed (its type differs per backend).
enum Handed<'a> {
    /// The answer, until it is taken.
    Ready(Option<Result<(), LedgerError>>),
    /// The backend's future (none without a durable backend in the build).
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    Waiting(
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), LedgerError>> + Send + 'a>>,
    ),
}

impl std::future::Future for Handed<'_> {
    type Output = Result<(), LedgerError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        match &mut *self {
            // Taken once; a poll after completion waits forever, as a fused future does.
            Handed::Ready(answer) => answer.take().map_or(Poll::Pending, Poll::Ready),
            Handed::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

impl From<MemoryLedger> for AnyLedger {
    fn from(ledger: MemoryLedger) -> AnyLedger {
        AnyLedger::Memory(ledger)
    }
}

#[cfg(feature = "sqlite")]
impl From<SqliteLedger> for AnyLedger {
    fn from(ledger: SqliteLedger) -> AnyLedger {
        AnyLedger::Sqlite(ledger)
    }
}

#[cfg(feature = "postgres")]
impl From<PostgresLedger> for AnyLedger {
    fn from(ledger: PostgresLedger) -> AnyLedger {
        AnyLedger::Postgres(ledger)
    }
}

/// Which backend and where: `memory (this process only)`, `SQLite file PATH`, `PostgreSQL URL
/// (schema NAME)` with the password hidden.
impl fmt::Display for AnyLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyLedger::Memory(_) => f.write_str("memory (this process only)"),
            #[cfg(feature = "sqlite")]
            AnyLedger::Sqlite(l) => write!(f, "SQLite file {}", l.path()),
            #[cfg(feature = "postgres")]
            AnyLedger::Postgres(l) => {
                write!(f, "PostgreSQL {} (schema {})", l.url(), l.namespace())
            }
        }
    }
}

impl Ledger for AnyLedger {
    fn flush(&self) -> impl std::future::Future<Output = Result<(), LedgerError>> + Send {
        AnyLedger::flush(self)
    }

    fn is_durable(&self) -> bool {
        match self {
            AnyLedger::Memory(l) => l.is_durable(),
            #[cfg(feature = "sqlite")]
            AnyLedger::Sqlite(l) => l.is_durable(),
            #[cfg(feature = "postgres")]
            AnyLedger::Postgres(l) => l.is_durable(),
        }
    }

    /// Hands the event to the backend now, not when the future is first polled: the
    /// backend's own hand-over contract holds through `AnyLedger`.
    fn record(
        &self,
        event: UsageEvent,
    ) -> impl std::future::Future<Output = Result<(), LedgerError>> + Send {
        match self {
            AnyLedger::Memory(l) => {
                l.record_now(event);
                Handed::Ready(Some(Ok(())))
            }
            #[cfg(feature = "sqlite")]
            AnyLedger::Sqlite(l) => Handed::Waiting(Box::pin(l.record(event))),
            #[cfg(feature = "postgres")]
            AnyLedger::Postgres(l) => Handed::Waiting(Box::pin(l.record(event))),
        }
    }

    async fn totals(&self, query: &LedgerQuery) -> Result<Vec<GroupTotal>, LedgerError> {
        match self {
            AnyLedger::Memory(l) => l.totals(query).await,
            #[cfg(feature = "sqlite")]
            AnyLedger::Sqlite(l) => l.totals(query).await,
            #[cfg(feature = "postgres")]
            AnyLedger::Postgres(l) => l.totals(query).await,
        }
    }

    async fn top(
        &self,
        query: &LedgerQuery,
        by: RankBy,
        n: usize,
    ) -> Result<Vec<GroupTotal>, LedgerError> {
        match self {
            AnyLedger::Memory(l) => l.top(query, by, n).await,
            #[cfg(feature = "sqlite")]
            AnyLedger::Sqlite(l) => l.top(query, by, n).await,
            #[cfg(feature = "postgres")]
            AnyLedger::Postgres(l) => l.top(query, by, n).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(p: &str) -> LedgerUrl {
        LedgerUrl::Sqlite(PathBuf::from(p))
    }

    fn pg(url: &str, ns: &str) -> LedgerUrl {
        LedgerUrl::Postgres {
            url: url.into(),
            namespace: ns.into(),
        }
    }

    fn parse(text: &str) -> LedgerUrl {
        LedgerUrl::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn memory() {
        assert_eq!(parse("memory:"), LedgerUrl::Memory);
        assert_eq!(parse("  MEMORY:\n"), LedgerUrl::Memory);
        assert_eq!(parse("memory://"), LedgerUrl::Memory);
        let err = LedgerUrl::parse("memory:x").expect_err("path after memory:");
        assert!(err.to_string().contains("takes nothing"), "{err}");
    }

    #[test]
    fn sqlite_forms() {
        assert_eq!(parse("sqlite:ledger.db"), sqlite("ledger.db"));
        assert_eq!(parse("sqlite:./data/ledger.db"), sqlite("./data/ledger.db"));
        assert_eq!(parse("sqlite:/var/lib/tb/l.db"), sqlite("/var/lib/tb/l.db"));
        assert_eq!(
            parse("sqlite:///var/lib/tb/l.db"),
            sqlite("/var/lib/tb/l.db")
        );
        assert_eq!(parse("sqlite://data/l.db"), sqlite("data/l.db"));
        assert_eq!(parse("SQLite:l.db"), sqlite("l.db"));
    }

    #[test]
    fn bare_paths_are_sqlite_files() {
        assert_eq!(
            parse("/tmp/tb/ledger.sqlite3"),
            sqlite("/tmp/tb/ledger.sqlite3")
        );
        assert_eq!(parse("ledger.sqlite3"), sqlite("ledger.sqlite3"));
        assert_eq!(parse("./memory:"), sqlite("./memory:"));
        assert_eq!(parse("data/a:b.db"), sqlite("data/a:b.db"));
        assert_eq!(
            parse(r"C:\tb\ledger.sqlite3"),
            sqlite(r"C:\tb\ledger.sqlite3")
        );
        assert_eq!(parse("./memory"), sqlite("./memory"));
    }

    #[test]
    fn bare_backend_names_are_errors() {
        for name in ["memory", "sqlite", "postgres"] {
            let err = LedgerUrl::parse(name).expect_err(name);
            assert!(
                err.to_string().contains(&format!("did you mean `{name}:`")),
                "{err}"
            );
        }
    }

    #[test]
    fn sqlite_errors() {
        for text in ["sqlite:", "sqlite://"] {
            let err = LedgerUrl::parse(text).expect_err(text);
            assert!(err.to_string().contains("no file path"), "{err}");
        }
        for text in ["sqlite::memory:", "sqlite:file:x.db?mode=memory"] {
            let err = LedgerUrl::parse(text).expect_err(text);
            assert!(err.to_string().contains("use `memory:`"), "{err}");
        }
    }

    #[test]
    fn postgres_forms() {
        assert_eq!(
            parse("postgres://u@localhost:5432/tb"),
            pg("postgres://u@localhost:5432/tb", DEFAULT_POSTGRES_NAMESPACE)
        );
        assert_eq!(
            parse("postgresql://u:pw@db/tb?namespace=books"),
            pg("postgresql://u:pw@db/tb", "books")
        );
        assert_eq!(
            parse("postgres://db/tb?sslmode=disable&namespace=books&connect_timeout=5"),
            pg(
                "postgres://db/tb?sslmode=disable&connect_timeout=5",
                "books"
            )
        );
        assert_eq!(
            parse("postgres:///tb?host=/run/postgresql"),
            pg(
                "postgres:///tb?host=/run/postgresql",
                DEFAULT_POSTGRES_NAMESPACE
            )
        );
    }

    #[test]
    fn postgres_errors() {
        let cases = [
            ("postgres:", "starts with `postgres://`"),
            ("postgres://", "no host or database"),
            ("postgres://db/tb?namespace=", "invalid namespace"),
            ("postgres://db/tb?namespace=Books", "invalid namespace"),
            ("postgres://db/tb?namespace=pg_x", "invalid namespace"),
            ("postgres://db/tb?namespace=a&namespace=b", "given twice"),
        ];
        for (text, want) in cases {
            let err = LedgerUrl::parse(text).expect_err(text);
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
    }

    /// Options nobody reads are errors that list what is accepted, never silently kept.
    #[test]
    fn unknown_options_are_errors() {
        for text in [
            "postgres://db/tb?lease=5",
            "postgres://db/tb?namespace=books&foo=bar",
            "postgresql://u:pw@db/tb?Namespace=books",
        ] {
            let err = LedgerUrl::parse(text).expect_err(text).to_string();
            assert!(err.contains("unknown option"), "{text}: {err}");
            for accepted in ["namespace", "sslmode", "connect_timeout"] {
                assert!(err.contains(accepted), "{text}: {err} lists {accepted}");
            }
            assert!(!err.contains("pw@"), "{err}");
        }
        for text in [
            "sqlite:ledger.db?mode=ro",
            "sqlite:///var/tb/l.db?cache=shared",
        ] {
            let err = LedgerUrl::parse(text).expect_err(text).to_string();
            assert!(err.contains("takes no options"), "{text}: {err}");
        }
        // A bare path may hold `?`.
        assert_eq!(parse("./odd?.db"), sqlite("./odd?.db"));
    }

    /// Parameters are percent-decoded; a password holding `@` reaches tokio-postgres encoded
    /// (it splits at the first `@`), and never shows.
    #[test]
    fn postgres_urls_are_parsed_as_urls() {
        assert_eq!(
            parse("postgres://db/tb?namespace=b%6Foks"),
            pg("postgres://db/tb", "books")
        );
        let url = parse("postgres://admin:p@ss@db/tb");
        assert_eq!(
            url,
            pg("postgres://admin:p%40ss@db/tb", DEFAULT_POSTGRES_NAMESPACE)
        );
        assert!(!url.to_string().contains("p%40ss"), "{url}");
        let err = LedgerUrl::parse("postgres://admin:hun?ter2@db/tb?namespace=Bad")
            .expect_err("bad namespace")
            .to_string();
        assert!(!err.contains("hun") && !err.contains("ter2"), "{err}");
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_parameter_values_are_checked_when_parsed() {
        for (text, option) in [
            ("postgres://db/tb?connect_timeout=soon", "connect_timeout"),
            ("postgres://db/tb?sslmode=maybe", "sslmode"),
            ("postgres://db:port/tb", "not a valid URL"),
        ] {
            let err = LedgerUrl::parse(text).expect_err(text).to_string();
            assert!(err.contains(option), "{text}: {err}");
        }
        let err = LedgerUrl::parse("postgres://h1:5432,h2:5433/db").expect_err("two hosts");
        assert!(err.to_string().contains("?host=h1,h2"), "{err}");
    }

    #[test]
    fn unknown_scheme_and_empty() {
        let err = LedgerUrl::parse("redis://cache:6379/0").expect_err("redis");
        assert_eq!(
            err,
            LedgerUrlError::UnknownScheme {
                scheme: "redis".into(),
                text: "redis://cache:6379/0".into(),
            }
        );
        let msg = err.to_string();
        for form in [
            "memory:",
            "sqlite:PATH",
            "sqlite://PATH",
            "postgres://",
            "namespace",
        ] {
            assert!(msg.contains(form), "{msg} lists {form}");
        }
        assert_eq!(LedgerUrl::parse(""), Err(LedgerUrlError::Empty));
        assert_eq!(LedgerUrl::parse(" \t\n"), Err(LedgerUrlError::Empty));
        assert!(LedgerUrlError::Empty.to_string().contains("sqlite:PATH"));
    }

    #[test]
    fn passwords_are_hidden() {
        let err = LedgerUrl::parse("mysql://admin:hunter2@db/tb").expect_err("mysql");
        let msg = err.to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("mysql://admin:***@db/tb"), "{msg}");

        let err = LedgerUrl::parse("postgres://admin:hunter2@db/tb?namespace=Bad")
            .expect_err("namespace");
        assert!(!err.to_string().contains("hunter2"), "{err}");

        let url = parse("postgres://admin:hunter2@db/tb?password=hunter3&namespace=books");
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("hunter"), "{shown}");
        }
        assert_eq!(
            url.to_string(),
            "postgres://admin:***@db/tb?password=***&namespace=books"
        );
        // The URL handed to tokio-postgres keeps the password.
        let LedgerUrl::Postgres { url: conn, .. } = &url else {
            panic!("postgres")
        };
        assert!(conn.contains("hunter2") && conn.contains("hunter3"));
    }

    #[test]
    fn display_parses_back() {
        for text in [
            "memory:",
            "sqlite:ledger.db",
            "sqlite:/var/lib/tb/l.db",
            "postgres://u@db/tb?namespace=books",
            "postgres://db/tb?sslmode=disable&namespace=books",
        ] {
            let url = parse(text);
            assert_eq!(url.to_string(), text);
            assert_eq!(parse(&url.to_string()), url);
        }
        let unc = sqlite("//server/share/l.db");
        assert_eq!(unc.to_string(), "sqlite:////server/share/l.db");
        assert_eq!(parse(&unc.to_string()), unc);
        assert_eq!(
            parse("postgres://db/tb").to_string(),
            "postgres://db/tb?namespace=token_budget"
        );
    }

    fn vars<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            set.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn default_path_order() {
        let all = [
            ("TOKEN_BUDGET_HOME", "/tb"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            default_path_from(vars(&all)),
            Path::new("/tb/ledger.sqlite3")
        );
        assert_eq!(
            default_path_from(vars(&all[1..])),
            Path::new("/xdg/token-budget/ledger.sqlite3")
        );
        assert_eq!(
            default_path_from(vars(&all[2..])),
            Path::new("/home/u/.local/share/token-budget/ledger.sqlite3")
        );
        assert_eq!(
            default_path_from(vars(&[])),
            Path::new("./token-budget/ledger.sqlite3")
        );
        // Empty values count as unset; a relative XDG_DATA_HOME is ignored.
        assert_eq!(
            default_path_from(vars(&[
                ("TOKEN_BUDGET_HOME", ""),
                ("XDG_DATA_HOME", "rel"),
                ("HOME", "/home/u"),
            ])),
            Path::new("/home/u/.local/share/token-budget/ledger.sqlite3")
        );
        // TOKEN_BUDGET_HOME may be relative.
        assert_eq!(
            default_path_from(vars(&[("TOKEN_BUDGET_HOME", "state")])),
            Path::new("state/ledger.sqlite3")
        );
    }

    #[test]
    fn from_env_falls_back_to_the_default_file() {
        let home = ("TOKEN_BUDGET_HOME", "/tb");
        assert_eq!(from_vars(vars(&[home])), Ok(sqlite("/tb/ledger.sqlite3")));
        assert_eq!(
            from_vars(vars(&[home, ("TOKEN_BUDGET_LEDGER", " ")])),
            Ok(sqlite("/tb/ledger.sqlite3"))
        );
        assert_eq!(
            from_vars(vars(&[home, ("TOKEN_BUDGET_LEDGER", "memory:")])),
            Ok(LedgerUrl::Memory)
        );
        let err = from_vars(vars(&[("TOKEN_BUDGET_LEDGER", "redis://u:pw@h")])).expect_err("redis");
        let msg = err.to_string();
        assert!(
            msg.starts_with("TOKEN_BUDGET_LEDGER: unknown ledger scheme `redis:`"),
            "{msg}"
        );
        assert!(!msg.contains("pw"), "{msg}");
    }

    #[tokio::test]
    async fn memory_opens_and_sqlite_dir_errors_name_the_path() {
        let ledger = AnyLedger::open("memory:").await.expect("memory");
        assert_eq!(ledger.backend(), "memory");
        ledger.flush().await.expect("flush");

        #[cfg(feature = "sqlite")]
        {
            // A regular file where a directory should be.
            let file = std::env::temp_dir().join(format!(
                "tb-any-not-a-dir-{}-{}",
                std::process::id(),
                line!()
            ));
            std::fs::write(&file, b"x").expect("write");
            let target = file.join("sub").join("ledger.sqlite3");
            let err = AnyLedger::open(&target.display().to_string())
                .await
                .expect_err("parent is a file");
            let _ = std::fs::remove_file(&file);
            assert!(matches!(err, OpenLedgerError::CreateDir { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(&target.display().to_string()), "{msg}");
        }
    }

    #[cfg(not(feature = "sqlite"))]
    #[tokio::test]
    async fn sqlite_without_its_feature_is_a_typed_error() {
        let err = AnyLedger::open("sqlite:x.db").await.expect_err("no sqlite");
        assert!(
            matches!(
                err,
                OpenLedgerError::FeatureDisabled {
                    feature: "sqlite",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("built without feature sqlite"),
            "{err}"
        );
    }

    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn postgres_without_its_feature_is_a_typed_error() {
        let err = AnyLedger::open("postgres://u:pw@db/tb")
            .await
            .expect_err("no postgres");
        let msg = err.to_string();
        assert!(msg.contains("built without feature postgres"), "{msg}");
        assert!(msg.contains("postgres://u:***@db/tb"), "{msg}");
    }
}
