//! Issue 11.10 end to end: `timctl apply` against a gateway whose certificate no system root
//! vouches for stops at the first call with one message naming `SSL_CERT_FILE`, calls nothing
//! else and records nothing; with `SSL_CERT_FILE` naming that certificate, the same run works.

mod client_common;

use std::process::Stdio;
use std::sync::Arc;

use base64::Engine as _;

use client_common::{Scripted, http};

const KEY: &str = "tls-cli-test-key";
const CERT_DER: &[u8] = include_bytes!("../fixtures/tls/self-signed-cert.der");
const KEY_DER: &[u8] = include_bytes!("../fixtures/tls/self-signed-key.der");

/// A TLS server with the self-signed certificate that answers every call with success, on a
/// runtime of its own so that the test thread can block on the binary.
fn tls_server() -> (Scripted, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CERT_DER.to_vec().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(KEY_DER.to_vec().into()),
        )
        .unwrap();
    let server = rt.block_on(Scripted::start_with(
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))),
        Arc::new(|_, _, _| {
            http(
                "200 OK",
                "",
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#,
            )
        }),
    ));
    (server, rt)
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

fn apply(dir: &std::path::Path, url: &str, cert_file: Option<&std::path::Path>) -> (i32, String) {
    let mut cmd = timctl_tests::timctl();
    cmd.args([
        "apply",
        "-f",
        "timctl.yaml",
        "--auto-approve",
        "--max-retries",
        "5",
    ])
    .current_dir(dir)
    .env("TIMCTL_STATE", dir.join(".timctl/state.db"))
    .env("TIMCTL_ENDPOINT", url)
    .env("TIMCTL_SECRET_KEY", KEY)
    .env_remove("SSL_CERT_FILE")
    .env_remove("SSL_CERT_DIR")
    .stdin(Stdio::null());
    if let Some(file) = cert_file {
        cmd.env("SSL_CERT_FILE", file);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn an_untrusted_certificate_stops_apply_and_ssl_cert_file_trusts_it() {
    let (server, _rt) = tls_server();
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = String::from(
        "version: 1\napp:\n  sdkappid: 1400000001\n  region: singapore\n  admin: administrator\nabsent:\n  alice:\n",
    );
    for i in 0..20 {
        manifest.push_str(&format!("    - user: p{i}\n"));
    }
    std::fs::write(dir.path().join("timctl.yaml"), manifest).unwrap();

    let (code, output) = apply(dir.path(), &server.url, None);
    assert_eq!(code, 1, "{output}");
    assert_eq!(
        output.matches("SSL_CERT_FILE").count(),
        1,
        "one message names SSL_CERT_FILE: {output}"
    );
    assert!(output.contains("certificate"), "{output}");
    // Issue 18.9: the cause once, in that message, not once more per call in flight.
    assert_eq!(
        output.matches("UnknownIssuer").count(),
        1,
        "the certificate's fault is said once: {output}"
    );
    assert!(
        !output.contains("gave up after"),
        "nothing is retried: {output}"
    );
    assert_eq!(server.requests(), 0);

    let cert_file = dir.path().join("gateway.pem");
    std::fs::write(&cert_file, pem(CERT_DER)).unwrap();
    let (code, output) = apply(dir.path(), &server.url, Some(&cert_file));
    assert_eq!(code, 0, "{output}");
    assert_eq!(server.requests(), 20);
}
