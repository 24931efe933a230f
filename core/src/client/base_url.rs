//! Where calls go: a region's host, or a checked override (a private gateway, a fake).

use std::fmt;
use std::net::IpAddr;

use crate::api::Region;

/// Where calls go: `https://HOST/` for a region, or an override (a private gateway, a fake).
/// Holds no credentials and no query, so it is safe to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl {
    url: url::Url,
    loopback: bool,
}

/// Why an `--endpoint`/`TIMCTL_ENDPOINT` value was refused. Never echoes the value, which
/// might carry credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum BaseUrlError {
    /// Not a URL.
    #[error("--endpoint/TIMCTL_ENDPOINT is not a valid URL ({0})")]
    #[diagnostic(
        code(timctl::endpoint::invalid),
        help("write it like https://host or http://127.0.0.1:8080")
    )]
    Invalid(String),
    /// Neither http nor https.
    #[error("--endpoint/TIMCTL_ENDPOINT must start with https://, not {0}://")]
    #[diagnostic(
        code(timctl::endpoint::scheme),
        help("use https://host (or http:// to a loopback IP address such as 127.0.0.1)")
    )]
    Scheme(String),
    /// Plain http to a host that is not a loopback IP address: the UserSig would cross the
    /// network in clear.
    #[error(
        "--endpoint/TIMCTL_ENDPOINT uses plain http:// for {0}, which is not a loopback IP address"
    )]
    #[diagnostic(
        code(timctl::endpoint::plain_http),
        help(
            "every call carries the UserSig: use https://, or for a local fake a loopback IP literal such as http://127.0.0.1:8080 or http://[::1]:8080 (a name such as localhost is resolved by the system, so it is not trusted)"
        )
    )]
    PlainHttp(String),
    /// `user:password@` in the URL.
    #[error("--endpoint/TIMCTL_ENDPOINT must not contain a user name or password")]
    #[diagnostic(
        code(timctl::endpoint::credentials),
        help("timctl signs every call itself; remove the user:password@ part")
    )]
    Credentials,
    /// A query string or fragment, which the client owns.
    #[error("--endpoint/TIMCTL_ENDPOINT must not contain a query string or fragment")]
    #[diagnostic(
        code(timctl::endpoint::query),
        help("timctl writes the query string itself; keep only scheme, host, port and path")
    )]
    Query,
}

impl BaseUrl {
    /// `https://{region.host()}/`.
    pub fn for_region(region: Region) -> Self {
        let url = url::Url::parse(&format!("https://{}/", region.host()))
            .unwrap_or_else(|_| unreachable!("region hosts are valid"));
        BaseUrl {
            url,
            loopback: false,
        }
    }

    /// An override. Plain `http://` is taken only for a loopback IP literal (127.0.0.0/8,
    /// `[::1]`): a name, even `localhost`, is resolved by the system (`/etc/hosts`, DNS) and
    /// could send the UserSig in clear anywhere. A path (a gateway's prefix) is kept and the
    /// endpoint's path is appended below it.
    pub fn parse(s: &str) -> Result<Self, BaseUrlError> {
        let mut url =
            url::Url::parse(s.trim()).map_err(|e| BaseUrlError::Invalid(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(BaseUrlError::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(BaseUrlError::Query);
        }
        let loopback = match url.host() {
            Some(url::Host::Domain(_)) => false,
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => return Err(BaseUrlError::Invalid("no host".into())),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(BaseUrlError::PlainHttp(
                    url.host_str().unwrap_or_default().to_owned(),
                ));
            }
            other => return Err(BaseUrlError::Scheme(other.to_owned())),
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(BaseUrl { url, loopback })
    }

    /// The override when there is one, else the region's host.
    pub fn resolve(region: Region, endpoint: Option<&str>) -> Result<Self, BaseUrlError> {
        match endpoint {
            Some(e) if !e.trim().is_empty() => BaseUrl::parse(e),
            _ => Ok(BaseUrl::for_region(region)),
        }
    }

    /// Whether the host is a loopback IP address (then no proxy is ever used).
    pub fn is_loopback(&self) -> bool {
        self.loopback
    }

    /// The host (name or IP address), for messages.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The URL, ending in `/`.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            BaseUrl::for_region(Region::Singapore).as_str(),
            "https://adminapisgp.im.qcloud.com/"
        );
        assert!(
            BaseUrl::parse("http://127.0.0.1:8080")
                .unwrap()
                .is_loopback()
        );
        assert!(BaseUrl::parse("http://[::1]:1/").unwrap().is_loopback());
        assert!(
            BaseUrl::parse("http://127.0.0.2/x")
                .unwrap()
                .as_str()
                .ends_with("/x/")
        );
        assert_eq!(
            BaseUrl::parse("http://10.0.0.1"),
            Err(BaseUrlError::PlainHttp("10.0.0.1".into()))
        );
        assert_eq!(
            BaseUrl::parse("http://127.example.com"),
            Err(BaseUrlError::PlainHttp("127.example.com".into()))
        );
        assert_eq!(
            BaseUrl::parse("ftp://127.0.0.1"),
            Err(BaseUrlError::Scheme("ftp".into()))
        );
        assert_eq!(
            BaseUrl::parse("https://u:hunter2@gw.example"),
            Err(BaseUrlError::Credentials)
        );
        assert_eq!(
            BaseUrl::parse("https://gw.example/?usersig=x"),
            Err(BaseUrlError::Query)
        );
        let err = BaseUrl::parse("not a url hunter2").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(BaseUrl::parse("https://gw.example/prefix").is_ok());
        assert_eq!(
            BaseUrl::resolve(Region::China, None).unwrap().as_str(),
            "https://console.tim.qq.com/"
        );
    }

    /// Issue 11.9: a name is resolved by the system, so plain http to it is refused even when
    /// the name is `localhost`; https to it is fine, and goes through no proxy exemption.
    #[test]
    fn plain_http_only_to_loopback_ip_literals() {
        assert_eq!(
            BaseUrl::parse("http://localhost:8080"),
            Err(BaseUrlError::PlainHttp("localhost".into()))
        );
        assert_eq!(
            BaseUrl::parse("http://LOCALHOST"),
            Err(BaseUrlError::PlainHttp("localhost".into()))
        );
        let https = BaseUrl::parse("https://localhost:8443").unwrap();
        assert!(!https.is_loopback());
    }
}
