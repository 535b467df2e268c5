//! The professional registry: create, edit, read and search professionals. Status changes
//! (suspension, departure) touch cards too and are in [`crate::CardService`].

use cps_audit::AuditEvent;
use std::sync::Arc;

use cps_store::{Expect, Store, WriteBatch, WriteOp};

use crate::error::{EnrolError, Result};
use crate::fold::fold;
use crate::model::{Cursor, Page, Professional, ProfessionalData, ProfessionalStatus};
use crate::tables::{self, PROFESSIONALS, PROFESSIONALS_BY_NAME};

/// Most results of one search page.
pub const MAX_PAGE: usize = 500;

/// The registry of health professionals, in the store.
#[derive(Clone)]
pub struct Registry {
    pub(crate) store: Arc<dyn Store>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Key of a professional in the name index.
pub(crate) fn name_key(data: &ProfessionalData) -> Vec<u8> {
    let mut k = fold(&data.surname).into_bytes();
    k.push(b' ');
    k.extend(fold(&data.given_names).into_bytes());
    k.push(0);
    k.extend_from_slice(data.idnat_ps.as_bytes());
    k
}

/// The write operations that store `new` over `old` (with its raw bytes): the record with an
/// optimistic-concurrency precondition, and the name index.
pub(crate) fn professional_ops(
    old: Option<(&Professional, &[u8])>,
    new: &Professional,
) -> Result<Vec<WriteOp>> {
    let id = new.data.idnat_ps.as_bytes();
    let mut ops = Vec::with_capacity(3);
    let expect = match old {
        None => Expect::Absent,
        Some((_, raw)) => Expect::Value(raw.to_vec()),
    };
    ops.push(tables::put(PROFESSIONALS, id, new, expect)?);
    let new_key = name_key(&new.data);
    match old {
        Some((o, _)) if name_key(&o.data) == new_key => {}
        Some((o, _)) => {
            ops.push(tables::delete(
                PROFESSIONALS_BY_NAME,
                &name_key(&o.data),
                Expect::Any,
            ));
            ops.push(tables::put_raw(
                PROFESSIONALS_BY_NAME,
                &new_key,
                Vec::new(),
                Expect::Any,
            ));
        }
        None => ops.push(tables::put_raw(
            PROFESSIONALS_BY_NAME,
            &new_key,
            Vec::new(),
            Expect::Any,
        )),
    }
    Ok(ops)
}

/// Whether a search text names an IdNat_PS (or its beginning) rather than a name.
fn looks_like_idnat(q: &str) -> bool {
    q.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && q.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase() || b == b'/')
}

impl Registry {
    /// The registry in `store`.
    pub fn new(store: Arc<dyn Store>) -> Registry {
        Registry { store }
    }

    /// A professional by IdNat_PS.
    pub fn get(&self, idnat_ps: &str) -> Result<Option<Professional>> {
        if idnat_ps.is_empty() || idnat_ps.len() > 64 {
            return Ok(None);
        }
        Ok(tables::get(self.store.as_ref(), PROFESSIONALS, idnat_ps.as_bytes())?.map(|(p, _)| p))
    }

    pub(crate) fn get_raw(&self, idnat_ps: &str) -> Result<Option<(Professional, Vec<u8>)>> {
        if idnat_ps.is_empty() || idnat_ps.len() > 64 {
            return Ok(None);
        }
        tables::get(self.store.as_ref(), PROFESSIONALS, idnat_ps.as_bytes())
    }

    /// A professional, or [`EnrolError::UnknownProfessional`].
    pub fn require(&self, idnat_ps: &str) -> Result<Professional> {
        self.get(idnat_ps)?
            .ok_or_else(|| EnrolError::UnknownProfessional(crate::model::shown(idnat_ps)))
    }

    /// Registers a new professional (status active). Durable and audited.
    pub fn create(&self, data: ProfessionalData, actor: &str, now: i64) -> Result<Professional> {
        let data = data.validated()?;
        let p = Professional {
            data,
            status: ProfessionalStatus::Active,
            updated_at: now,
            revision: 1,
        };
        let mut batch: WriteBatch = professional_ops(None, &p)?.into();
        batch.push(tables::audit(
            now,
            actor,
            AuditEvent::ProfessionalCreated {
                idnat_ps: p.data.idnat_ps.to_string(),
                profession: p.data.profession_code.to_string(),
            },
        ));
        match self.store.commit(batch) {
            Ok(_) => Ok(p),
            Err(cps_store::StoreError::Conflict(_)) => {
                Err(EnrolError::ProfessionalExists(p.data.idnat_ps))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces a professional's identity, profession and activities; `revision` is the one the
    /// caller read (a concurrent change makes this fail with [`EnrolError::Stale`]). The
    /// IdNat_PS and the status do not change here. Certificates already issued keep the old
    /// data until the card is renewed.
    pub fn update(
        &self,
        data: ProfessionalData,
        revision: u64,
        actor: &str,
        now: i64,
    ) -> Result<Professional> {
        let data = data.validated()?;
        let (old, raw) = self
            .get_raw(&data.idnat_ps)?
            .ok_or_else(|| EnrolError::UnknownProfessional(data.idnat_ps.clone()))?;
        if old.revision != revision {
            return Err(EnrolError::Stale(format!("professional {}", data.idnat_ps)));
        }
        if old.data == data {
            return Ok(old);
        }
        let p = Professional {
            data,
            status: old.status,
            updated_at: now,
            revision: old.revision + 1,
        };
        let mut batch: WriteBatch = professional_ops(Some((&old, &raw)), &p)?.into();
        batch.push(tables::audit(
            now,
            actor,
            AuditEvent::ProfessionalUpdated {
                idnat_ps: p.data.idnat_ps.to_string(),
                revision: p.revision,
            },
        ));
        self.store.commit(batch).map_err(|e| {
            EnrolError::stale_on_conflict(e, format!("professional {}", p.data.idnat_ps))
        })?;
        Ok(p)
    }

    /// Searches by IdNat_PS (a text starting with a digit: exact or prefix) or by name prefix
    /// (case- and accent-insensitive, surname then given names: `"dupont"`, `"le gall ma"`).
    /// An empty text lists everyone by IdNat_PS. Pages of at most `limit` (1 to
    /// [`MAX_PAGE`]); pass the returned cursor to get the next page.
    pub fn search(
        &self,
        text: &str,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<Professional>> {
        let limit = limit.clamp(1, MAX_PAGE);
        let text = text.trim();
        if text.len() > 200 {
            return Err(EnrolError::Invalid(
                "search text longer than 200 bytes".into(),
            ));
        }
        let after_key = match after {
            Some(c) => Some(
                hex::decode(&c.0)
                    .map_err(|_| EnrolError::Invalid("malformed search cursor".into()))?,
            ),
            None => None,
        };
        if text.is_empty() || looks_like_idnat(text) {
            let rows = self.store.scan_records(
                PROFESSIONALS,
                text.as_bytes(),
                after_key.as_deref(),
                limit + 1,
            )?;
            let more = rows.len() > limit;
            let mut items = Vec::new();
            let mut last = None;
            for (k, v) in rows.into_iter().take(limit) {
                items.push(tables::decode::<Professional>(PROFESSIONALS, &k, &v)?);
                last = Some(k);
            }
            return Ok(Page {
                items,
                next: if more {
                    last.map(|k| Cursor(hex::encode(k)))
                } else {
                    None
                },
            });
        }
        let prefix = fold(text);
        if prefix.is_empty() {
            return Err(EnrolError::Invalid(format!(
                "search text '{}' has no letter or digit",
                crate::model::shown(text)
            )));
        }
        let rows = self.store.scan_records(
            PROFESSIONALS_BY_NAME,
            prefix.as_bytes(),
            after_key.as_deref(),
            limit + 1,
        )?;
        let more = rows.len() > limit;
        let mut items = Vec::new();
        let mut last = None;
        for (k, _) in rows.into_iter().take(limit) {
            let idnat = k
                .iter()
                .rposition(|b| *b == 0)
                .map(|i| String::from_utf8_lossy(&k[i + 1..]).into_owned())
                .unwrap_or_default();
            if let Some(p) = self.get(&idnat)? {
                items.push(p);
            }
            last = Some(k);
        }
        Ok(Page {
            items,
            next: if more {
                last.map(|k| Cursor(hex::encode(k)))
            } else {
                None
            },
        })
    }
}
