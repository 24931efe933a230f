//! Where a PostgreSQL state is and how to reach it: the `postgres://` URL, the password
//! (URL, `PGPASSWORD`, `~/.pgpass`) and TLS (`sslmode`, `sslrootcert`), following libpq's
//! conventions (https://www.postgresql.org/docs/current/libpq-connect.html).
//!
//! The password is kept in a [`Password`], whose `Debug` hides it, and the URL is shown through
//! [`PgLocation`]'s `Display`, which drops it, so no message can carry it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::PgError;

/// A database password. Never printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// libpq's `sslmode`. The default, as in libpq, is `prefer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, without verifying the certificate; else plain.
    #[default]
    Prefer,
    /// TLS, without verifying the certificate.
    Require,
    /// TLS; the certificate must chain to `sslrootcert`, whatever name it carries.
    VerifyCa,
    /// TLS; the certificate must chain to `sslrootcert` and name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
}

/// The server: a TCP host, or the directory of a Unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgHost {
    /// A host name or IP address.
    Tcp(String),
    /// The directory holding `.s.PGSQL.<port>`.
    Socket(PathBuf),
}

/// A parsed `postgres://` state location, without secrets in its `Display` or `Debug`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgLocation {
    /// The server.
    pub host: PgHost,
    /// The port (5432 by default).
    pub port: u16,
    /// The role.
    pub user: String,
    /// The database (the user's name by default).
    pub dbname: String,
    /// The password written in the URL, if any.
    pub password: Option<Password>,
    /// TLS.
    pub sslmode: SslMode,
    /// The CA certificates (PEM) for `verify-ca`/`verify-full`; `system` for the system's.
    pub sslrootcert: Option<String>,
    /// `connect_timeout`, in seconds in the URL.
    pub connect_timeout: Option<Duration>,
    /// The URL as shown: the password removed.
    shown: String,
}

impl std::fmt::Display for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The host parsed in place of an empty one after a user (`postgres://user@/db`).
const EMPTY_HOST: &str = "timctl-empty-host.invalid";

/// `s` with [`EMPTY_HOST`] put where its authority has a user but no host
/// (`postgres://user@/db`, `postgres://user:pw@:5433/db`); `None` when it has a host or no user.
fn fill_empty_host(s: &str) -> Option<String> {
    let rest_at = s.find("://")? + 3;
    let rest = &s[rest_at..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let at = authority.rfind('@')?;
    let after = &authority[at + 1..];
    (after.is_empty() || after.starts_with(':')).then(|| {
        format!(
            "{}{}{EMPTY_HOST}{}",
            &s[..rest_at],
            &authority[..=at],
            &s[rest_at + at + 1..]
        )
    })
}

/// Whether `s` names a PostgreSQL state rather than an SQLite file.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

fn decode(s: &str) -> Result<String, PgError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| PgError::BadUrl {
            why: "a part of it is not UTF-8 once percent-decoded".to_owned(),
        })
}

impl PgLocation {
    /// Parses a `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…&sslrootcert=…&connect_timeout=…]`
    /// URL. A missing user is `PGUSER` or the login name; a missing database is the user's name.
    pub fn parse(s: &str) -> Result<Self, PgError> {
        if !is_postgres_url(s) {
            return Err(PgError::BadUrl {
                why: "it must start with postgres:// or postgresql://".to_owned(),
            });
        }
        // `postgres://user@/db?host=/run/postgresql`: libpq takes an empty host (the socket
        // directory then comes from `host=`), the URL parser refuses a user without one. A
        // placeholder host is parsed in its place and taken out of what is shown.
        let (s, placeholder) = match fill_empty_host(s) {
            Some(filled) => (std::borrow::Cow::Owned(filled), true),
            None => (std::borrow::Cow::Borrowed(s), false),
        };
        // The error of the URL parser never quotes the input, so it cannot show the password.
        let mut url = url::Url::parse(&s).map_err(|e| PgError::BadUrl { why: e.to_string() })?;
        let mut host = match url.host_str() {
            None | Some("") => PgHost::Tcp("localhost".to_owned()),
            Some(h) => PgHost::Tcp(h.trim_start_matches('[').trim_end_matches(']').to_owned()),
        };
        let port = url.port().unwrap_or(5432);
        let mut user = decode(url.username())?;
        let password = url.password().map(decode).transpose()?.map(Password);
        let mut dbname = decode(url.path().trim_start_matches('/'))?;
        let mut sslmode = SslMode::default();
        let mut sslrootcert = None;
        let mut connect_timeout = None;
        for (key, value) in url.query_pairs() {
            match &*key {
                "sslmode" => {
                    sslmode = SslMode::parse(&value).ok_or_else(|| PgError::BadUrl {
                        why: format!(
                            "sslmode={value} is not one of disable, prefer, require, verify-ca, verify-full"
                        ),
                    })?;
                }
                "sslrootcert" => sslrootcert = Some(value.into_owned()),
                "connect_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| PgError::BadUrl {
                        why: format!("connect_timeout={value} is not a number of seconds"),
                    })?;
                    // As libpq: zero (or nothing) waits indefinitely; less than 2 s means 2 s.
                    connect_timeout = (secs > 0).then(|| Duration::from_secs(secs.max(2)));
                }
                "host" if value.starts_with('/') => host = PgHost::Socket(PathBuf::from(&*value)),
                "host" => host = PgHost::Tcp(value.into_owned()),
                "user" => user = value.into_owned(),
                "dbname" => dbname = value.into_owned(),
                "password" => {
                    return Err(PgError::BadUrl {
                        why: "put the password before the @ (postgres://user:password@host/db), \
                              in PGPASSWORD or in ~/.pgpass, not in the query string"
                            .to_owned(),
                    });
                }
                other => {
                    return Err(PgError::BadUrl {
                        why: format!(
                            "timctl does not know the parameter {other:?}; it takes sslmode, \
                             sslrootcert, connect_timeout, host, user and dbname"
                        ),
                    });
                }
            }
        }
        if user.is_empty() {
            user = std::env::var("PGUSER")
                .ok()
                .filter(|u| !u.is_empty())
                .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
                .ok_or_else(|| PgError::BadUrl {
                    why: "it names no user (postgres://USER@HOST/DB), and neither PGUSER nor USER is set"
                        .to_owned(),
                })?;
        }
        if dbname.is_empty() {
            dbname.clone_from(&user);
        }
        // No `host=` named one: localhost, as for a URL without any host.
        if let PgHost::Tcp(h) = &host
            && h == EMPTY_HOST
        {
            host = PgHost::Tcp("localhost".to_owned());
        }
        // Only the password is removed: what is left is what a user needs to see which state.
        let _ = url.set_password(None);
        let mut shown = url.to_string();
        if placeholder {
            shown = shown.replacen(&format!("@{EMPTY_HOST}"), "@", 1);
        }
        Ok(Self {
            host,
            port,
            user,
            dbname,
            password,
            sslmode,
            sslrootcert,
            connect_timeout,
            shown,
        })
    }

    /// The password: the URL's, else `PGPASSWORD`, else the first matching line of the
    /// password file (`PGPASSFILE`, else `~/.pgpass`).
    pub fn resolve_password(&self) -> Option<Password> {
        if let Some(p) = &self.password {
            return Some(p.clone());
        }
        if let Ok(p) = std::env::var("PGPASSWORD")
            && !p.is_empty()
        {
            return Some(Password(p));
        }
        let file = match std::env::var_os("PGPASSFILE") {
            Some(f) if !f.is_empty() => PathBuf::from(f),
            _ => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
        };
        let host = match &self.host {
            PgHost::Tcp(h) => h.clone(),
            // libpq matches a socket connection against `localhost`.
            PgHost::Socket(_) => "localhost".to_owned(),
        };
        pgpass_lookup(&file, &host, self.port, &self.dbname, &self.user)
    }

    /// The driver's configuration, with keepalives so that a vanished client or server is
    /// noticed within minutes, a TCP user timeout so that a write the network swallows (a
    /// black hole) fails instead of hanging. (The statement timeout is set on the session once
    /// it is open, by `connect`: a startup `options` parameter is refused by PgBouncer.)
    pub(crate) fn driver_config(&self) -> postgres::Config {
        let mut config = postgres::Config::new();
        match &self.host {
            PgHost::Tcp(h) => config.host(h),
            PgHost::Socket(dir) => config.host_path(dir),
        };
        config
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("timctl")
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES)
            .tcp_user_timeout(TCP_USER_TIMEOUT)
            .ssl_mode(match self.sslmode {
                SslMode::Disable => postgres::config::SslMode::Disable,
                SslMode::Prefer => postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                    postgres::config::SslMode::Require
                }
            });
        if let Some(t) = self.connect_timeout {
            config.connect_timeout(t);
        }
        if let Some(Password(p)) = self.resolve_password() {
            config.password(p);
        }
        config
    }

    /// The TLS client configuration for this `sslmode`, or `None` for `disable`.
    pub(crate) fn tls_config(&self) -> Result<Option<rustls::ClientConfig>, PgError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.tls_error(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.sslmode {
            SslMode::Disable => return Ok(None),
            SslMode::Prefer | SslMode::Require => Arc::new(NoNameOrChainCheck(provider)),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = self.root_store()?;
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| self.tls_error(e.to_string()))?;
                if self.sslmode == SslMode::VerifyCa {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        Ok(Some(
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
        ))
    }

    fn tls_error(&self, why: String) -> PgError {
        PgError::Tls {
            state: self.to_string(),
            why,
        }
    }

    /// The CA certificates: `sslrootcert` (a PEM file, or `system`), else
    /// `~/.postgresql/root.crt` as libpq.
    fn root_store(&self) -> Result<rustls::RootCertStore, PgError> {
        let mut store = rustls::RootCertStore::empty();
        let file = match self.sslrootcert.as_deref() {
            Some("system") => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(self.tls_error(
                        "sslrootcert=system, but no certificate was found in the system's store"
                            .to_owned(),
                    ));
                }
                return Ok(store);
            }
            Some(path) => PathBuf::from(path),
            None => match std::env::var_os("HOME") {
                Some(home) => Path::new(&home).join(".postgresql/root.crt"),
                None => {
                    return Err(self.tls_error(format!(
                        "sslmode={} needs sslrootcert (a PEM file of the CA, or `system`)",
                        self.sslmode_name()
                    )));
                }
            },
        };
        let pem = std::fs::read(&file).map_err(|e| {
            self.tls_error(format!(
                "cannot read the root certificate file {} ({e}); sslmode={} needs sslrootcert",
                file.display(),
                self.sslmode_name()
            ))
        })?;
        let certs: Vec<CertificateDer<'static>> =
            rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    self.tls_error(format!("{} is not PEM certificates: {e}", file.display()))
                })?;
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(self.tls_error(format!("{} holds no certificate", file.display())));
        }
        Ok(store)
    }

    fn sslmode_name(&self) -> &'static str {
        match self.sslmode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Client TCP keepalives: idle this long before the first probe, ...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ... then a probe this often, ...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ... and the connection is dead after this many unanswered.
const KEEPALIVE_RETRIES: u32 = 6;
/// Data sent and not acknowledged for this long ends the connection (`TCP_USER_TIMEOUT`; with
/// the keepalives above, an idle session whose peer vanished ends once its probes have gone
/// unanswered this long).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest any one statement of timctl's may run on the server. timctl's statements take
/// milliseconds (a batch of 1,000 records, a 10,000-entry chunk of `state migrate`, reading
/// 100k entries in well under a second); a minute is a stall, never work.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Looks `host:port:database:user` up in a libpq password file: the first line whose fields
/// match (`*` matches anything; `\:` and `\\` escape) gives the password. As libpq, a file that
/// others can read is ignored, with a warning.
pub(crate) fn pgpass_lookup(
    file: &Path,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<Password> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(file).ok()?;
        if !meta.is_file() {
            return None;
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access; it is ignored (chmod 0600 it)",
                file.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(file).ok()?;
    let port = port.to_string();
    let wanted = [host, port.as_str(), dbname, user];
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split_pgpass_line(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| Password(fields[4].clone()))
        })
}

/// Splits a password-file line on unescaped `:`; the fifth field takes the rest of the line.
fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("never empty").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

/// `prefer` and `require`: encrypted, but as libpq, the certificate is not checked (neither its
/// chain nor its name). The handshake's signatures are still verified.
#[derive(Debug)]
struct NoNameOrChainCheck(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoNameOrChainCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root, whatever host name the certificate names.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_kept_but_never_shown() {
        let loc =
            PgLocation::parse("postgres://ci:s3cr%40t@db.example:6543/timctl?sslmode=require")
                .unwrap();
        assert_eq!(loc.password, Some(Password("s3cr@t".to_owned())));
        let shown = format!("{loc} {loc:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
        assert_eq!(
            loc.to_string(),
            "postgres://ci@db.example:6543/timctl?sslmode=require"
        );
        assert_eq!(loc.port, 6543);
        assert_eq!(loc.sslmode, SslMode::Require);
    }

    /// Issue 18.9: a user with an empty host and the socket directory in `host=`, as libpq
    /// takes it.
    #[test]
    fn an_empty_host_after_a_user_takes_the_socket_directory_from_host() {
        let loc = PgLocation::parse("postgres://ci:secret@/states?host=/run/postgresql").unwrap();
        assert_eq!(loc.host, PgHost::Socket(PathBuf::from("/run/postgresql")));
        assert_eq!(loc.user, "ci");
        assert_eq!(loc.dbname, "states");
        assert_eq!(
            loc.to_string(),
            "postgres://ci@/states?host=/run/postgresql"
        );
        let loc = PgLocation::parse("postgresql://ci@:5433/states").unwrap();
        assert_eq!(loc.host, PgHost::Tcp("localhost".to_owned()));
        assert_eq!(loc.port, 5433);
        assert_eq!(loc.to_string(), "postgresql://ci@:5433/states");
        // A real host is left alone.
        let loc = PgLocation::parse("postgres://ci@db.internal/states").unwrap();
        assert_eq!(loc.host, PgHost::Tcp("db.internal".to_owned()));
    }

    #[test]
    fn defaults_follow_libpq() {
        let loc = PgLocation::parse("postgresql://ci@[::1]/").unwrap();
        assert_eq!(loc.host, PgHost::Tcp("::1".to_owned()));
        assert_eq!((loc.port, loc.dbname.as_str()), (5432, "ci"));
        assert_eq!(loc.sslmode, SslMode::Prefer);
        let loc = PgLocation::parse("postgres://ci@h/db?connect_timeout=1").unwrap();
        assert_eq!(loc.connect_timeout, Some(Duration::from_secs(2)));
    }

    /// Issue 18.3: a write the network swallows ends the session instead of hanging it.
    #[test]
    fn sessions_have_a_tcp_user_timeout_and_keepalives() {
        let config = PgLocation::parse("postgres://ci@h/db")
            .unwrap()
            .driver_config();
        assert_eq!(config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert!(config.get_keepalives());
    }

    #[test]
    fn bad_parameters_are_named_without_the_url() {
        for (url, says) in [
            ("postgres://u:pw@h/db?sslmode=allow", "sslmode=allow"),
            ("postgres://u:pw@h/db?foo=1", "\"foo\""),
            ("postgres://u@h/db?password=pw", "before the @"),
            (
                "postgres://u:pw@h/db?connect_timeout=soon",
                "connect_timeout",
            ),
        ] {
            let err = PgLocation::parse(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains(":pw"), "{url}: {err}");
        }
    }

    #[test]
    fn pgpass_matches_fields_wildcards_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:db:ci:nope\n*:5433:db:ci:a\\:b\\\\c\n*:*:*:ci:fallback:with:colons\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let get = |host, port| pgpass_lookup(&file, host, port, "db", "ci").map(|p| p.0);
        assert_eq!(get("h", 5433).as_deref(), Some("a:b\\c"));
        assert_eq!(get("h", 5432).as_deref(), Some("fallback:with:colons"));
        assert_eq!(get("other", 5432).as_deref(), Some("nope"));
        assert_eq!(
            pgpass_lookup(&file, "h", 1, "db", "someone").map(|p| p.0),
            None
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(get("h", 5433), None, "a file others can read is ignored");
        }
    }
}
