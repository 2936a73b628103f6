//! `handoff audit verify`: the chain from row 1 to the last with the audit
//! key (the setting, or the key file; never created here), then the anchor
//! (see `crate::audit::anchor`), which the check moves forward when it passes.
//! Exit code 1 on anything but an intact, keyed chain that reaches its anchor.

use std::process::ExitCode;

use handoff_actors::audit::verify_chain;

use crate::app;
use crate::audit::{self, anchor};
use crate::config::Config;

pub async fn verify(cfg: &Config) -> anyhow::Result<ExitCode> {
    let db = app::open_db(cfg).await?;
    let files = audit::files(&cfg.database_url()?)?;
    let key = audit::key::load(
        cfg.audit_key.as_ref().map(|k| k.expose()),
        &files.key,
        false,
    )?;
    let rows = db.audit_rows().await?;
    let broken = |seq: i64, why: &str| {
        println!("audit chain BROKEN at row {seq}: {why}");
        Ok(ExitCode::FAILURE)
    };
    let v = match verify_chain(key.as_ref().map(|(k, _)| k), &rows) {
        Ok(v) => v,
        Err(e) if e.no_key => {
            println!(
                "audit chain NOT CHECKED from row {}: {}; set {} or run where {} is",
                e.seq,
                e.why,
                audit::key::SETTING,
                files.key.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return broken(e.seq, &e.why),
    };
    if v.rows > 0 && v.unkeyed == v.rows {
        println!(
            "audit chain NOT SEALED: all {} rows are unkeyed (written before the chain was \
             keyed, or rewritten without the key); start the server once to seal them",
            v.rows
        );
        return Ok(ExitCode::FAILURE);
    }
    let head = v.head.as_ref().map(|(s, _)| *s).unwrap_or(0);
    let anchored = match anchor::read(&files.anchor) {
        Err(e) => return broken(head + 1, &format!("{e}")),
        Ok(None) => None,
        Ok(Some(a)) => {
            // Verified above: row n is at index n - 1.
            match usize::try_from(a.seq - 1).ok().and_then(|i| rows.get(i)) {
                None => {
                    return broken(
                        a.seq,
                        &format!(
                            "the anchor {} records row {} but the log ends at row {head}: its \
                             newest rows were deleted (if the database was restored from a \
                             backup on purpose, remove the anchor file)",
                            files.anchor.display(),
                            a.seq
                        ),
                    )
                }
                Some(r) if r.hash != a.hash => {
                    return broken(
                        a.seq,
                        &format!(
                            "the row differs from the one the anchor {} records: rewritten",
                            files.anchor.display()
                        ),
                    )
                }
                Some(_) => Some(a.seq),
            }
        }
    };
    if let Some((seq, hash)) = v.head {
        if let Err(e) = anchor::advance(&files.anchor, &anchor::Point { seq, hash }) {
            eprintln!("handoff: {e}");
        }
    }
    let sealed = if v.unkeyed > 0 {
        format!(
            "; the first {} written before keying, sealed by row {}",
            v.unkeyed,
            v.unkeyed + 1
        )
    } else {
        String::new()
    };
    let anchor_note = match anchored {
        Some(seq) => format!("reaches its anchor (row {seq})"),
        // No path here: this line is read for its numbers.
        None => "no anchor on this machine yet (deleting the newest rows is caught from now on)"
            .to_string(),
    };
    println!("audit chain intact: {} rows{sealed}; {anchor_note}", v.rows);
    Ok(ExitCode::SUCCESS)
}
