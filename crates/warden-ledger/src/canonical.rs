//! Canonical JSON: the RFC 8785 JSON Canonicalization Scheme (JCS) over `serde_json::Value`.
//!
//! A ledger entry is hashed as bytes, so the bytes must be a function of the value: the same entry
//! always encodes to the same bytes, on every node, in every version, and an auditor can re-derive
//! them with any JCS implementation (there are ones for Go, Python, Java, JavaScript, .NET). JCS is
//! the standard for exactly this: object members sorted by the UTF-16 code units of their names, no
//! insignificant whitespace, strings escaped the way ECMAScript's `JSON.stringify` does, numbers in
//! ECMAScript's `Number.prototype.toString` form.
//!
//! Implemented here rather than taken from a crate: the encoder is ~150 lines, the JCS crates on
//! crates.io are either unmaintained or bring their own float formatter, and this one is checked
//! against the RFC's own examples (§3.2.2, §3.2.3, Appendix B) in the tests below.
//!
//! Two deliberate refusals, both so that the canonical bytes mean exactly what the caller had:
//! * integers beyond ±2^53 that a double would change (JCS reads every number as an IEEE double,
//!   which would silently round them; `2^53 + 1` would hash like `2^53`): write such values as
//!   strings;
//! * nesting deeper than [`MAX_DEPTH`] (bounded recursion on untrusted input).

use serde_json::{Number, Value};

/// Largest nesting of arrays and objects accepted (serde_json's own parser stops at 128 too).
pub const MAX_DEPTH: usize = 128;

/// The largest integer magnitude JCS represents exactly (2^53).
pub const MAX_SAFE_INTEGER: u64 = 1 << 53;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("integer {0} is beyond ±2^53 and would not survive canonical JSON; store it as a string")]
    IntegerOutOfRange(String),
    #[error("a number is not finite")]
    NotFinite,
    #[error("the value is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// The canonical (RFC 8785) bytes of `value`.
pub fn to_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value, 0)?;
    Ok(out)
}

/// Appends the canonical bytes of `value` to `out`.
pub fn write_value(out: &mut Vec<u8>, value: &Value, depth: usize) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(CanonicalError::TooDeep);
            }
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, depth + 1)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(CanonicalError::TooDeep);
            }
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| compare_keys(a.0, b.0));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, k);
                out.push(b':');
                write_value(out, v, depth + 1)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// RFC 8785 §3.2.3: property names compare as arrays of UTF-16 code units.
fn compare_keys(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// RFC 8785 §3.2.2.2: the escaping of ECMAScript's `JSON.stringify`.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            0x08 => Some(b"\\b"),
            0x09 => Some(b"\\t"),
            0x0a => Some(b"\\n"),
            0x0c => Some(b"\\f"),
            0x0d => Some(b"\\r"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// An integer's canonical text: itself within ±2^53; beyond, only if it is already the canonical
/// form of the double it denotes (e.g. `-4899321731515364000`, which is how JCS writes that double,
/// and which a JSON parser hands back as an integer), else refused rather than silently changed.
fn write_integer(
    out: &mut Vec<u8>,
    text: String,
    magnitude: u64,
    as_double: f64,
) -> Result<(), CanonicalError> {
    if magnitude > MAX_SAFE_INTEGER && format_double(as_double)? != text {
        return Err(CanonicalError::IntegerOutOfRange(text));
    }
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn write_number(out: &mut Vec<u8>, n: &Number) -> Result<(), CanonicalError> {
    if let Some(u) = n.as_u64() {
        return write_integer(out, u.to_string(), u, u as f64);
    }
    if let Some(i) = n.as_i64() {
        return write_integer(out, i.to_string(), i.unsigned_abs(), i as f64);
    }
    match n.as_f64() {
        Some(f) => {
            out.extend_from_slice(format_double(f)?.as_bytes());
            Ok(())
        }
        // Only with serde_json's `arbitrary_precision`, for a number no f64 holds.
        None => Err(CanonicalError::NotFinite),
    }
}

/// ECMAScript `Number.prototype.toString(x)` (ECMA-262 §6.1.6.1.20), which RFC 8785 §3.2.2.3
/// prescribes. Rust's shortest round-trip formatting gives the digits `s` and exponent; the ES rules
/// then place the decimal point.
pub fn format_double(x: f64) -> Result<String, CanonicalError> {
    if !x.is_finite() {
        return Err(CanonicalError::NotFinite);
    }
    if x == 0.0 {
        // +0 and -0 both print as "0".
        return Ok("0".to_owned());
    }
    // The fewest digits that read back as `x` (Rust's shortest round-trip form)...
    let shortest = format!("{:e}", x.abs());
    let (mantissa, _) = shortest.split_once('e').ok_or(CanonicalError::NotFinite)?;
    let k = mantissa.chars().filter(char::is_ascii_digit).count();
    // ...then, with that many digits, the value closest to `x`, ties to even, as ECMA-262 requires
    // (Rust's shortest form may pick the other of two equally close candidates; its fixed-precision
    // form rounds the exact binary value half to even).
    // At a power of two the gap below `x` is half the gap above, so the closest candidate might not
    // read back as `x`: then the shortest form is the only candidate and stands.
    let closest = format!("{:.*e}", k.saturating_sub(1), x.abs());
    let sci = if closest.parse::<f64>() == Ok(x.abs()) {
        closest
    } else {
        shortest
    };
    let (mantissa, exp) = sci.split_once('e').ok_or(CanonicalError::NotFinite)?;
    let exp: i32 = exp.parse().map_err(|_| CanonicalError::NotFinite)?;
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exp + 1;
    let mut out = String::with_capacity(32);
    if x < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let e = n - 1;
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if e >= 0 { '+' } else { '-' });
        out.push_str(&e.unsigned_abs().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(to_vec(v).unwrap()).unwrap()
    }

    /// RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical form.
    #[test]
    fn rfc8785_appendix_b_numbers() {
        let cases: [(u64, &str); 24] = [
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, want) in cases {
            assert_eq!(format_double(f64::from_bits(bits)).unwrap(), want, "{bits:016x}");
        }
        assert!(format_double(f64::NAN).is_err());
        assert!(format_double(f64::INFINITY).is_err());
    }

    /// RFC 8785 §3.2.2 / §3.2.4: the example input and its canonical bytes (given there in hex).
    #[test]
    fn rfc8785_section_3_2_example() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let v: Value = serde_json::from_str(input).unwrap();
        let hex = "7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72 \
                   75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a \
                   5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31 \
                   65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37 \
                   5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30 \
                   30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d";
        let want = hex::decode(hex.replace(' ', "")).unwrap();
        assert_eq!(to_vec(&v).unwrap(), want);
    }

    /// RFC 8785 §3.2.3: sorting by UTF-16 code units, not by code points or UTF-8 bytes.
    #[test]
    fn rfc8785_section_3_2_3_sorting() {
        let input = r#"{
          "\u20ac": "Euro Sign",
          "\r": "Carriage Return",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "1": "One",
          "\ud83d\ude00": "Emoji: Grinning Face",
          "\u0080": "Control",
          "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let v: Value = serde_json::from_str(input).unwrap();
        let out = canon(&v);
        let order: Vec<&str> = [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh",
        ]
        .to_vec();
        let mut last = 0;
        for name in order {
            let at = out.find(name).unwrap();
            assert!(at > last, "{name} out of order in {out}");
            last = at;
        }
    }

    #[test]
    fn strings_escape_like_json_stringify() {
        assert_eq!(
            canon(&json!("a\"b\\c\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}é\u{2028}/")),
            "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}é\u{2028}/\""
        );
    }

    #[test]
    fn integers_and_limits() {
        assert_eq!(
            canon(&json!([0, -1, 9007199254740992u64, -9007199254740992i64])),
            "[0,-1,9007199254740992,-9007199254740992]"
        );
        assert!(matches!(
            to_vec(&json!(9007199254740993u64)),
            Err(CanonicalError::IntegerOutOfRange(_))
        ));
        assert!(matches!(
            to_vec(&json!(-9007199254740993i64)),
            Err(CanonicalError::IntegerOutOfRange(_))
        ));
        // Beyond 2^53 only the canonical spelling of a double passes (what a float encodes to).
        assert_eq!(canon(&json!(-4899321731515364000i64)), "-4899321731515364000");
        assert_eq!(canon(&json!(-4.899321731515364e18)), "-4899321731515364000");
        assert!(to_vec(&json!(1152921504606846976u64)).is_err()); // 2^60: a double, printed otherwise
        assert!(to_vec(&json!(u64::MAX)).is_err());
        assert_eq!(canon(&json!(1.0)), "1");
        assert_eq!(canon(&json!(-0.0)), "0");
        let mut deep = json!(1);
        for _ in 0..=MAX_DEPTH {
            deep = json!([deep]);
        }
        assert_eq!(to_vec(&deep), Err(CanonicalError::TooDeep));
    }

    #[test]
    fn output_is_a_fixed_point() {
        let v = json!({"b": [1.5, "x", {"z": null, "a": true}], "a": -3, "é": 1e-7});
        let once = to_vec(&v).unwrap();
        let again = to_vec(&serde_json::from_slice::<Value>(&once).unwrap()).unwrap();
        assert_eq!(once, again);
        assert_eq!(
            String::from_utf8(once).unwrap(),
            r#"{"a":-3,"b":[1.5,"x",{"a":true,"z":null}],"é":1e-7}"#
        );
    }
}
