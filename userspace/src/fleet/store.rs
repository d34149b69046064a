//! The connection to etcd, with etcdctl's options: endpoints, a CA to
//! trust, a client certificate and key, a user and password. The password
//! is held here only to log in; it is never printed (`Debug` hides it).

use std::{path::PathBuf, time::Duration};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::FleetError;

/// PEM files for TLS: the CA that signed the servers' certificates, and
/// this client's certificate and key (both or neither).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// etcd's own authentication.
#[derive(Clone)]
pub struct Auth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("user", &self.user)
            .field("password", &"(hidden)")
            .finish()
    }
}

/// Where the store is and how to reach it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `host:port` or `http(s)://host:port`, as etcdctl takes them.
    pub endpoints: Vec<String>,
    pub tls: Option<TlsFiles>,
    pub auth: Option<Auth>,
    /// Each request's deadline (a store that does not answer is an error,
    /// not a hang).
    pub timeout: Duration,
}

impl Connection {
    /// `ENDPOINTS` as etcdctl's `--endpoints`: comma-separated.
    pub fn new(endpoints: &str) -> Connection {
        Connection {
            endpoints: endpoints
                .split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
            tls: None,
            auth: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// The endpoints as one string, for messages.
    pub fn describe(&self) -> String {
        self.endpoints.join(",")
    }

    fn options(&self) -> Result<ConnectOptions, FleetError> {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(5), self.timeout);
        if let Some(tls) = &self.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.cacert {
                t = t.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&tls.cert, &tls.key) {
                (Some(c), Some(k)) => t = t.identity(Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                (Some(f), None) | (None, Some(f)) => {
                    return Err(FleetError::Credentials {
                        file: f.display().to_string(),
                        message: "a client certificate needs its key (--cert with --key)".into(),
                    })
                }
            }
            o = o.with_tls(t);
        }
        if let Some(a) = &self.auth {
            o = o.with_user(a.user.clone(), a.password.clone());
        }
        Ok(o)
    }

    /// Connects (and logs in, with a user). etcd-client reconnects by
    /// itself afterwards; requests fail while the store is away.
    pub async fn connect(&self) -> Result<Client, FleetError> {
        if self.endpoints.is_empty() {
            return Err(FleetError::BadValue {
                key: "--etcd".into(),
                message: "no endpoint".into(),
            });
        }
        let options = self.options()?;
        Client::connect(&self.endpoints, Some(options))
            .await
            .map_err(|source| FleetError::Connect {
                endpoints: self.describe(),
                source,
            })
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, FleetError> {
    std::fs::read(path).map_err(|e| FleetError::Credentials {
        file: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_like_etcdctl_and_the_password_is_never_shown() {
        let mut c = Connection::new("127.0.0.1:2379, https://h:2379,");
        assert_eq!(c.endpoints, ["127.0.0.1:2379", "https://h:2379"]);
        c.auth = Some(Auth {
            user: "gw".into(),
            password: "s3cret-pass".into(),
        });
        let shown = format!("{c:?}");
        assert!(shown.contains("gw") && !shown.contains("s3cret"), "{shown}");
    }
}
