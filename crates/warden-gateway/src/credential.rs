//! PLACEHOLDER (replaced by the full scrubber on merge): credential scrubbing on decoded JSON.

use serde_json::Value;

pub const MIN_CREDENTIAL_LEN: usize = 8;
pub const REDACTED_CREDENTIAL: &str = "[REDACTED:upstream-credential]";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("a credential is shorter than {MIN_CREDENTIAL_LEN} bytes")]
    TooShort,
}

#[derive(Default)]
pub struct Scrubber {
    values: Vec<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} values)", self.values.len())
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ScrubReport {
    pub replaced: usize,
    pub changed: bool,
}

impl Scrubber {
    pub fn new(values: &[&[u8]]) -> Result<Scrubber, CredentialError> {
        let mut out = Vec::new();
        for v in values {
            if v.len() < MIN_CREDENTIAL_LEN {
                return Err(CredentialError::TooShort);
            }
            out.push(zeroize::Zeroizing::new(String::from_utf8_lossy(v).into_owned()));
        }
        Ok(Scrubber { values: out })
    }

    pub fn empty() -> Scrubber {
        Scrubber::default()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn scrub(&self, value: &mut Value) -> ScrubReport {
        let mut r = ScrubReport::default();
        if self.values.is_empty() {
            return r;
        }
        walk(value, &self.values, &mut r);
        r
    }
}

fn walk(v: &mut Value, forms: &[zeroize::Zeroizing<String>], r: &mut ScrubReport) {
    match v {
        Value::String(s) => {
            for f in forms {
                if s.contains(f.as_str()) {
                    *s = s.replace(f.as_str(), REDACTED_CREDENTIAL);
                    r.replaced += 1;
                    r.changed = true;
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| walk(x, forms, r)),
        Value::Object(o) => o.values_mut().for_each(|x| walk(x, forms, r)),
        _ => {}
    }
}
