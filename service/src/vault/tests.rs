//! The vault's unit tests: the stored format, the binding, the key ring's configuration, legacy values.
use super::*;
use aes_gcm::aead::{Aead, Payload};
use uuid::Uuid;

fn binding() -> TokenBinding {
    TokenBinding {
        tenant_id: TenantId(Uuid::new_v4()),
        connection_id: ConnectionId(Uuid::new_v4()),
        provider: Provider::Gmail,
        field: TokenField::Access,
        grant_id: Some(Uuid::new_v4()),
    }
}

#[test]
fn round_trip_and_fresh_nonce() {
    let (ring, _) = KeyRing::generate("k1");
    let b = binding();
    let secret = SecretString::from("ya29.canary-token");
    let one = ring.encrypt(&secret, &b).unwrap();
    let two = ring.encrypt(&secret, &b).unwrap();
    assert_ne!(one, two, "a fresh nonce per encryption");
    assert_eq!(
        ring.decrypt(&one, &b).unwrap().expose_secret(),
        "ya29.canary-token"
    );
    assert_eq!(key_id_of(&one).unwrap(), "k1");
    assert!(!one.windows(6).any(|w| w == b"canary"));
}

#[test]
fn binding_is_enforced() {
    let (ring, _) = KeyRing::generate("k1");
    let b = binding();
    let sealed = ring.encrypt(&SecretString::from("t"), &b).unwrap();
    for other in [
        TokenBinding {
            tenant_id: TenantId(Uuid::new_v4()),
            ..b
        },
        TokenBinding {
            connection_id: ConnectionId(Uuid::new_v4()),
            ..b
        },
        TokenBinding {
            provider: Provider::Slack,
            ..b
        },
        TokenBinding {
            field: TokenField::Refresh,
            ..b
        },
        TokenBinding {
            grant_id: Some(Uuid::new_v4()),
            ..b
        },
        TokenBinding {
            grant_id: None,
            ..b
        },
    ] {
        assert!(matches!(
            ring.decrypt(&sealed, &other),
            Err(VaultError::Undecryptable)
        ));
    }
    let mut tampered = sealed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(matches!(
        ring.decrypt(&tampered, &b),
        Err(VaultError::Undecryptable)
    ));
}

#[test]
fn configuration_is_checked() {
    let cfg = |keys: &str, primary: Option<&str>| TokenKeysConfig {
        keys: SecretString::from(keys.to_owned()),
        primary: primary.map(str::to_owned),
    };
    assert!(matches!(
        KeyRing::from_config(&cfg("", None)),
        Err(VaultError::NoKeys)
    ));
    assert!(matches!(
        KeyRing::from_config(&cfg("k1:AAAA", None)),
        Err(VaultError::BadKey(..))
    ));
    let (_, good) = KeyRing::generate("old");
    let (_, new) = KeyRing::generate("new");
    let both = format!("{},{}", good.keys.expose_secret(), new.keys.expose_secret());
    let ring = KeyRing::from_config(&cfg(&both, Some("new"))).unwrap();
    assert_eq!(ring.primary_key_id(), "new");
    assert!(matches!(
        KeyRing::from_config(&cfg(&both, Some("nope"))),
        Err(VaultError::UnknownPrimary(_))
    ));
    assert!(!format!("{ring:?}").contains(&good.keys.expose_secret()[4..]));
    // An entry written the wrong way round, or key material set as the primary: the error (which
    // goes to the start-up log) does not carry the material.
    let material = &good.keys.expose_secret()["old:".len()..];
    assert!(!format!("{:?}", cfg(&both, Some(material))).contains(material));
    for refused in [
        KeyRing::from_config(&cfg(&format!("{material}:old"), None)),
        KeyRing::from_config(&cfg(&both, Some(material))),
    ] {
        let said = refused.expect_err("refused").to_string();
        assert!(!said.contains(material), "{said}");
        assert!(said.contains("not shown"), "{said}");
    }
}

/// The associated data is part of every stored ciphertext: its bytes must never change.
#[test]
fn associated_data_bytes_are_stable() {
    let b = binding();
    let (t, c, g) = (b.tenant_id.0, b.connection_id.0, b.grant_id.unwrap());
    assert_eq!(
        b.associated_data(1),
        format!("harbor.token.v1\0{t}\0{c}\0gmail\0access_token").into_bytes()
    );
    assert_eq!(
        b.associated_data(2),
        format!("harbor.token.v2\0{t}\0{c}\0gmail\0access_token\0{g}").into_bytes()
    );
    let none = TokenBinding {
        grant_id: None,
        ..b
    };
    assert_eq!(
        none.associated_data(2),
        format!("harbor.token.v2\0{t}\0{c}\0gmail\0access_token\0no-grant").into_bytes()
    );
    // Every provider and field: the separators and names come from a table built at compile time.
    for provider in Provider::ALL {
        for field in TokenField::ALL {
            let other = TokenBinding {
                provider,
                field,
                ..b
            };
            let (p, f) = (provider.as_str(), field.as_str());
            assert_eq!(
                other.associated_data(1),
                format!("harbor.token.v1\0{t}\0{c}\0{p}\0{f}").into_bytes()
            );
            assert_eq!(
                other.associated_data(2),
                format!("harbor.token.v2\0{t}\0{c}\0{p}\0{f}\0{g}").into_bytes()
            );
        }
    }
    // The ids are spelled by the vault's own encoder: every hex digit, both ends of the range.
    for id in [
        uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
        uuid::Uuid::nil(),
        uuid::Uuid::max(),
    ] {
        let spelled = TokenBinding {
            tenant_id: TenantId(id),
            connection_id: ConnectionId(id),
            grant_id: Some(id),
            ..b
        };
        let id = id.hyphenated().to_string();
        assert_eq!(
            spelled.associated_data(2),
            format!("harbor.token.v2\0{id}\0{id}\0gmail\0access_token\0{id}").into_bytes()
        );
    }
}

#[test]
fn placeholder_and_duplicated_keys_are_refused() {
    let cfg = |keys: String| TokenKeysConfig {
        keys: SecretString::from(keys),
        primary: None,
    };
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    for byte in [0u8, 0x41, 0xff] {
        let refused = KeyRing::from_config(&cfg(format!("k1:{}", b64(&[byte; 32]))));
        assert!(
            matches!(refused, Err(VaultError::BadKey(_, m)) if m.contains("repeated")),
            "byte {byte:#x}"
        );
    }
    let (_, one) = KeyRing::generate("a");
    let material = one
        .keys
        .expose_secret()
        .split_once(':')
        .unwrap()
        .1
        .to_owned();
    let refused = KeyRing::from_config(&cfg(format!("a:{material},b:{material}")));
    assert!(
        matches!(refused, Err(VaultError::BadKey(id, m)) if id == "b" && m.contains("same key material"))
    );
}

/// The stored key id is compared as bytes: one that is not text is a malformed value, one that is
/// text but not configured is named.
#[test]
fn a_stored_key_id_is_named_when_unknown_and_malformed_when_not_text() {
    let (ring, _) = KeyRing::generate("k1");
    let b = binding();
    let sealed = ring.encrypt(&SecretString::from("t"), &b).unwrap();
    let mut unknown = sealed.clone();
    unknown[2] = b'x';
    assert!(matches!(ring.decrypt(&unknown, &b), Err(VaultError::UnknownKey(id)) if id == "x1"));
    let mut not_text = sealed;
    not_text[2] = 0xff;
    assert!(matches!(
        ring.decrypt(&not_text, &b),
        Err(VaultError::Malformed)
    ));
    assert!(matches!(key_id_of(&not_text), Err(VaultError::Malformed)));
}

#[test]
fn legacy_values_are_refused_but_rotation_can_read_them() {
    let (ring, _) = KeyRing::generate("k1");
    let b = binding();
    let mut legacy = ring.encrypt(&SecretString::from("t"), &b).unwrap();
    // Re-seal as a version 1 value would have been written: v1 associated data, no grant.
    let id = key_id_of(&legacy).unwrap().to_owned();
    let cipher = ring.cipher(id.as_bytes()).unwrap();
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: b"t",
                aad: &b.associated_data(1),
            },
        )
        .unwrap();
    legacy = [
        &[LEGACY_FORMAT_VERSION, id.len() as u8][..],
        id.as_bytes(),
        &nonce,
        &sealed,
    ]
    .concat();
    assert!(matches!(ring.decrypt(&legacy, &b), Err(VaultError::Legacy)));
    assert_eq!(
        ring.decrypt_any_format(&legacy, &b)
            .unwrap()
            .expose_secret(),
        "t"
    );
}
