//! The chain: what verifies, and what an edit, a deletion or a forged hash breaks.

use super::*;

fn key(b: u8) -> AuditKey {
    AuditKey::new([b; 32])
}

fn row(seq: i64, prev: &str) -> AuditRow {
    AuditRow {
        seq,
        ts: "2026-11-25T00:00:00.000000Z".into(),
        tenant: "local".into(),
        action: "session.registered".into(),
        actor: Some("agent".into()),
        subject_hash: Some("abc".into()),
        details: format!("{{\"n\":{seq}}}"),
        prev_hash: prev.to_string(),
        hash: String::new(),
    }
}

/// `unkeyed` rows as written before keying, then `keyed` rows.
fn chain(k: &AuditKey, unkeyed: i64, keyed: i64) -> Vec<AuditRow> {
    let mut prev = GENESIS.to_string();
    (1..=unkeyed + keyed)
        .map(|seq| {
            let mut r = row(seq, &prev);
            r.hash = if seq <= unkeyed {
                unkeyed_row_hash(&r)
            } else {
                row_hash(k, &r)
            };
            prev = r.hash.clone();
            r
        })
        .collect()
}

/// What someone with the table but not the key can do: recompute every
/// link from `from` on with unkeyed blake3, in the keyed format.
fn rehash_without_key(rows: &mut [AuditRow], from: usize) {
    for i in from..rows.len() {
        if i > 0 {
            rows[i].prev_hash = rows[i - 1].hash.clone();
        }
        let forged = unkeyed_row_hash(&rows[i]);
        rows[i].hash = match parse_tag(&rows[i].hash) {
            Some(Tag::Keyed { key_id, .. }) => format!("k1:{key_id}:{forged}"),
            _ => forged,
        };
    }
}

#[test]
fn intact_chain_verifies() {
    let k = key(1);
    let v = verify_chain(Some(&k), &chain(&k, 0, 5)).unwrap();
    assert_eq!((v.rows, v.unkeyed), (5, 0));
    assert_eq!(v.head.unwrap().0, 5);
    assert_eq!(verify_chain(Some(&k), &[]).unwrap().rows, 0);
}

#[test]
fn edits_deletions_and_reordering_are_detected() {
    let k = key(1);
    let mut edited = chain(&k, 0, 5);
    edited[2].details = "{}".into();
    assert_eq!(verify_chain(Some(&k), &edited).unwrap_err().seq, 3);

    let mut deleted = chain(&k, 0, 5);
    deleted.remove(1);
    assert_eq!(verify_chain(Some(&k), &deleted).unwrap_err().seq, 2);

    let mut first_gone = chain(&k, 0, 5);
    first_gone.remove(0);
    assert_eq!(verify_chain(Some(&k), &first_gone).unwrap_err().seq, 1);

    let mut rehashed = chain(&k, 0, 5);
    // Rewriting a row and its own keyed hash still breaks the next link.
    rehashed[1].details = "{}".into();
    rehashed[1].hash = row_hash(&k, &rehashed[1]);
    assert_eq!(verify_chain(Some(&k), &rehashed).unwrap_err().seq, 3);
}

#[test]
fn rows_rehashed_without_the_key_are_detected() {
    let k = key(1);
    // An edit, every later link recomputed.
    let mut edited = chain(&k, 0, 5);
    edited[2].details = "{}".into();
    rehash_without_key(&mut edited, 2);
    assert_eq!(verify_chain(Some(&k), &edited).unwrap_err().seq, 3);

    // A deletion, later rows renumbered and relinked.
    let mut deleted = chain(&k, 0, 5);
    deleted.remove(1);
    for (i, r) in deleted.iter_mut().enumerate() {
        r.seq = i as i64 + 1;
    }
    rehash_without_key(&mut deleted, 1);
    assert_eq!(verify_chain(Some(&k), &deleted).unwrap_err().seq, 2);

    // The whole log turned into unkeyed rows ends before the first one
    // the key made: verified, but with no keyed row left, which the
    // caller refuses (see `handoff audit verify`).
    let mut all = chain(&k, 0, 3);
    let mut prev = GENESIS.to_string();
    for r in all.iter_mut() {
        r.prev_hash = prev;
        r.hash = unkeyed_row_hash(r);
        prev = r.hash.clone();
    }
    let v = verify_chain(Some(&k), &all).unwrap();
    assert_eq!(v.unkeyed, v.rows);

    // Another key's chain.
    assert!(verify_chain(Some(&key(2)), &chain(&k, 0, 2))
        .unwrap_err()
        .why
        .contains(k.id()));
}

#[test]
fn rows_before_keying_are_sealed_by_the_first_keyed_row() {
    let k = key(1);
    let v = verify_chain(Some(&k), &chain(&k, 3, 2)).unwrap();
    assert_eq!((v.rows, v.unkeyed), (5, 3));

    // An unkeyed row edited and the unkeyed prefix recomputed: the first
    // keyed row no longer links to it.
    let mut rows = chain(&k, 3, 2);
    rows[1].details = "{}".into();
    rehash_without_key(&mut rows[..3], 1);
    assert_eq!(verify_chain(Some(&k), &rows).unwrap_err().seq, 4);

    // An unkeyed row after keyed ones.
    let mut rows = chain(&k, 0, 3);
    rows[2].hash = unkeyed_row_hash(&rows[2]);
    assert_eq!(verify_chain(Some(&k), &rows).unwrap_err().seq, 3);

    // Keyed rows and no key: not checked, rather than broken.
    let e = verify_chain(None, &chain(&k, 2, 2)).unwrap_err();
    assert_eq!((e.seq, e.no_key), (3, true));
}

#[test]
fn tags_tell_other_keys_and_unkeyed_hashes_apart() {
    let k = key(1);
    let sub = k.derive("handoff test");
    let t = k.tag(&sub, &["a", "b"]);
    assert!(t.starts_with(&format!("k1:{}:", k.id())));
    assert_eq!(k.check(&sub, &["a", "b"], &t), Ok(()));
    assert_eq!(k.check(&sub, &["ab", ""], &t), Err(Mismatch::Differs));
    let plain = blake3::hash(b"ab").to_hex().to_string();
    assert_eq!(k.check(&sub, &["a", "b"], &plain), Err(Mismatch::Unkeyed));
    assert_eq!(
        key(2).check(&sub, &["a", "b"], &t),
        Err(Mismatch::OtherKey(k.id().to_string()))
    );
    assert_eq!(k.check(&sub, &["a"], "k2:x:y"), Err(Mismatch::Malformed));
    assert!(!format!("{k:?}").contains(&format!("{:?}", [1u8; 32])));
}
