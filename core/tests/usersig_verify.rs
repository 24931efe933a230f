//! UserSig: the documented known value, round trips, every kind of tampering, and UserSigs made
//! by Tencent's own reference libraries (tests/vectors/).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use timctl_core::usersig::{self, SecretKey, VerifyError};

fn key(s: &str) -> SecretKey {
    SecretKey::new(s).expect("non-empty key")
}

/// Undoes the URL-safe mapping and the compression, giving the JSON document.
fn decode_doc(sig: &str) -> serde_json::Value {
    let b64: String = sig
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    let z = STANDARD.decode(b64).unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(z.as_slice()), &mut out)
        .unwrap();
    serde_json::from_slice(&out).unwrap()
}

/// Compresses and encodes a (possibly altered) document the way a UserSig is encoded.
fn encode_doc(doc: &serde_json::Value) -> String {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, doc.to_string().as_bytes()).unwrap();
    STANDARD
        .encode(z.finish().unwrap())
        .replace('+', "*")
        .replace('/', "-")
        .replace('=', "_")
}

const APP: u64 = 88888888;
const KEY: &str = "secretkey-0123456789abcdef";
const NOW: u64 = 1600000000;

#[test]
fn known_value_from_the_issue() {
    let k = key(KEY);
    assert_eq!(
        usersig::signature(APP, "administrator", &k, NOW, 86400),
        "ogvCmKqClEMbufXkeQcQAQT+sgD3/Kz9F8kXPcWyhkM="
    );
    let sig = usersig::make(APP, "administrator", &k, NOW, 86400);
    let doc = decode_doc(&sig);
    assert_eq!(
        doc["TLS.sig"],
        "ogvCmKqClEMbufXkeQcQAQT+sgD3/Kz9F8kXPcWyhkM="
    );
    assert_eq!(doc["TLS.ver"], "2.0");
    assert_eq!(doc["TLS.identifier"], "administrator");
    assert_eq!(doc["TLS.sdkappid"], APP);
    assert_eq!(doc["TLS.time"], NOW);
    assert_eq!(doc["TLS.expire"], 86400);
    // Only the URL-safe alphabet: a UserSig goes into a query string.
    assert!(
        sig.chars()
            .all(|c| c.is_ascii_alphanumeric() || "*-_".contains(c)),
        "{sig}"
    );
}

#[test]
fn round_trip_and_expiry_boundary() {
    let k = key(KEY);
    let sig = usersig::make(APP, "administrator", &k, NOW, 86400);
    let v = usersig::verify(&sig, &k, APP, "administrator", NOW).unwrap();
    assert_eq!(
        (v.sdkappid, v.identifier.as_str(), v.time, v.expire),
        (APP, "administrator", NOW, 86400)
    );
    assert_eq!(v.expires_at(), NOW + 86400);
    assert!(usersig::verify(&sig, &k, APP, "administrator", NOW + 86400).is_ok());
    assert_eq!(
        usersig::verify(&sig, &k, APP, "administrator", NOW + 86401),
        Err(VerifyError::Expired {
            expired_at: NOW + 86400,
            ago: 1
        })
    );
}

#[test]
fn each_tampering_fails_with_its_reason() {
    let k = key(KEY);
    let sig = usersig::make(APP, "administrator", &k, NOW, 86400);
    let reason = |s: &str, key: &SecretKey, app: u64, id: &str, now: u64| {
        usersig::verify(s, key, app, id, now).unwrap_err().reason()
    };
    // Another key.
    assert_eq!(
        reason(&sig, &key("another-key"), APP, "administrator", NOW),
        "bad_signature"
    );
    // Another identifier or app than asked for.
    assert_eq!(reason(&sig, &k, APP, "alice", NOW), "other_identifier");
    assert_eq!(reason(&sig, &k, APP + 1, "administrator", NOW), "other_app");
    // Expired.
    assert_eq!(
        reason(&sig, &k, APP, "administrator", NOW + 90000),
        "expired"
    );

    // Fields edited inside a genuine UserSig, without re-signing: the HMAC catches each.
    let doc = decode_doc(&sig);
    for (field, value) in [
        ("TLS.expire", serde_json::json!(86400 * 365)),
        ("TLS.time", serde_json::json!(NOW + 1)),
        ("TLS.identifier", serde_json::json!("mallory")),
        ("TLS.sdkappid", serde_json::json!(APP + 1)),
    ] {
        let mut d = doc.clone();
        d[field] = value;
        let forged = encode_doc(&d);
        let id = d["TLS.identifier"].as_str().unwrap();
        let app = d["TLS.sdkappid"].as_u64().unwrap();
        assert_eq!(
            reason(&forged, &k, app, id, NOW),
            "bad_signature",
            "{field}"
        );
    }
    // One byte of the HMAC changed.
    let mut d = doc.clone();
    let mut mac = STANDARD.decode(d["TLS.sig"].as_str().unwrap()).unwrap();
    mac[7] ^= 1;
    d["TLS.sig"] = STANDARD.encode(mac).into();
    assert_eq!(
        reason(&encode_doc(&d), &k, APP, "administrator", NOW),
        "bad_signature"
    );
    // An unaltered document re-encoded at another compression level still verifies.
    assert!(usersig::verify(&encode_doc(&doc), &k, APP, "administrator", NOW).is_ok());

    // One byte of the outer string changed: never valid, whichever check catches it.
    for i in [0, sig.len() / 2, sig.len() - 3] {
        let mut bytes = sig.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(bytes).unwrap();
        assert!(
            usersig::verify(&changed, &k, APP, "administrator", NOW).is_err(),
            "byte {i}"
        );
    }
    // Not a UserSig at all.
    for junk in ["", "%%%", "aGVsbG8_", &encode_doc(&serde_json::json!([1]))] {
        assert_eq!(
            reason(junk, &k, APP, "administrator", NOW),
            "malformed",
            "{junk:?}"
        );
    }
    let mut d = doc.clone();
    d.as_object_mut().unwrap().remove("TLS.sig");
    assert_eq!(
        reason(&encode_doc(&d), &k, APP, "administrator", NOW),
        "malformed"
    );
}

#[test]
fn errors_never_contain_the_key_or_the_usersig() {
    let k = key(KEY);
    let sig = usersig::make(APP, "administrator", &k, NOW, 86400);
    for err in [
        usersig::verify(&sig, &key("other"), APP, "administrator", NOW),
        usersig::verify(&sig, &k, APP, "alice", NOW),
        usersig::verify(&sig, &k, 1, "administrator", NOW),
        usersig::verify(&sig, &k, APP, "administrator", NOW * 2),
        usersig::verify(&sig[..20], &k, APP, "administrator", NOW),
    ] {
        let err = err.unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(
                !text.contains(KEY) && !text.contains(&sig) && !text.contains(&sig[..20]),
                "{text}"
            );
        }
    }
}

/// UserSigs made by the Python and npm reference libraries (tests/vectors/regenerate.sh).
#[test]
fn reference_library_vectors_verify() {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/vectors/usersigs.json")).unwrap();
    let k = key(v["key"].as_str().unwrap());
    let app = v["sdkappid"].as_u64().unwrap();
    let time = v["time"].as_u64().unwrap();
    let expire = v["expire"].as_u64().unwrap();
    let mut checked = 0;
    for lib in ["python_tls_sig_api_v2_1_1", "npm_tls_sig_api_v2_1_0_2"] {
        for case in v[lib].as_array().unwrap() {
            let id = case["identifier"].as_str().unwrap();
            let sig = case["usersig"].as_str().unwrap();
            let ok = usersig::verify(sig, &k, app, id, time + 10)
                .unwrap_or_else(|e| panic!("{lib} {id}: {e}"));
            assert_eq!((ok.time, ok.expire), (time, expire));
            // Same signature field as ours, whatever the layout around it.
            assert_eq!(
                decode_doc(sig)["TLS.sig"],
                usersig::signature(app, id, &k, time, expire)
            );
            assert_eq!(
                usersig::verify(sig, &key("wrong"), app, id, time)
                    .unwrap_err()
                    .reason(),
                "bad_signature"
            );
            assert_eq!(
                usersig::verify(sig, &k, app, id, time + expire + 1)
                    .unwrap_err()
                    .reason(),
                "expired"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}

proptest! {
    #[test]
    fn any_inputs_round_trip(
        app in 1u64..u64::MAX / 2,
        id in "[ -~]{1,32}",
        keytext in "[ -~]{1,64}",
        now in 0u64..4_000_000_000,
        expire in 1u64..(400 * 86400),
    ) {
        prop_assume!(!keytext.trim().is_empty());
        let k = key(&keytext);
        let sig = usersig::make(app, &id, &k, now, expire);
        let v = usersig::verify(&sig, &k, app, &id, now).unwrap();
        prop_assert_eq!(v.identifier, id);
        prop_assert_eq!((v.sdkappid, v.time, v.expire), (app, now, expire));
    }
}
