//! A small JSON writer over a `Cursor`: objects, arrays, strings, integers, booleans and null,
//! without allocating. It puts the commas and colons where they belong and escapes strings, so the
//! daemon's `/services` and `/nodes` answers cannot be malformed by what a service is called.
//!
//! Using it wrongly (a key outside an object, a value without a key, closing the wrong container,
//! nesting deeper than `JSON_DEPTH_MAX`) is a bug in the daemon, not bad input, and asserts. A
//! buffer that runs out is `Full`, as everywhere in `response`.

use super::response::{Cursor, Full};
use myco_core::hex::digit;

/// Containers may nest this deep; the daemon's answers use three levels.
pub const JSON_DEPTH_MAX: usize = 16;

pub struct Json<'c, 'b> {
    out: &'c mut Cursor<'b>,
    /// Open containers, innermost last: bit `d` of `objects` is set if level `d` is an object.
    depth: usize,
    objects: u32,
    /// Bit `d` is set once level `d` holds an item, so the next one needs a comma.
    has_items: u32,
    /// A key has been written and its value has not.
    awaiting_value: bool,
    /// The one top-level value is complete.
    done: bool,
}

const _: () = assert!(JSON_DEPTH_MAX < u32::BITS as usize);

impl<'c, 'b> Json<'c, 'b> {
    pub fn new(out: &'c mut Cursor<'b>) -> Self {
        Json {
            out,
            depth: 0,
            objects: 0,
            has_items: 0,
            awaiting_value: false,
            done: false,
        }
    }

    pub fn begin_object(&mut self) -> Result<(), Full> {
        self.open(true, b"{")
    }

    pub fn end_object(&mut self) -> Result<(), Full> {
        self.close(true, b"}")
    }

    pub fn begin_array(&mut self) -> Result<(), Full> {
        self.open(false, b"[")
    }

    pub fn end_array(&mut self) -> Result<(), Full> {
        self.close(false, b"]")
    }

    /// The key of the next member of the innermost object.
    pub fn key(&mut self, key: &str) -> Result<(), Full> {
        assert!(
            self.in_object() && !self.awaiting_value,
            "a key belongs in an object"
        );
        self.separate()?;
        put_string(self.out, key)?;
        self.out.put(b":")?;
        self.awaiting_value = true;
        Ok(())
    }

    pub fn string(&mut self, value: &str) -> Result<(), Full> {
        self.scalar(|out| put_string(out, value))
    }

    pub fn u64(&mut self, value: u64) -> Result<(), Full> {
        self.scalar(|out| out.put_u64(value))
    }

    pub fn i64(&mut self, value: i64) -> Result<(), Full> {
        self.scalar(|out| {
            if value < 0 {
                out.put(b"-")?;
            }
            out.put_u64(value.unsigned_abs())
        })
    }

    pub fn bool(&mut self, value: bool) -> Result<(), Full> {
        self.scalar(|out| out.put(if value { b"true" } else { b"false" }))
    }

    pub fn null(&mut self) -> Result<(), Full> {
        self.scalar(|out| out.put(b"null"))
    }

    /// Asserts that one complete value was written.
    pub fn finish(self) {
        assert!(self.done && self.depth == 0, "unclosed JSON container");
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.objects & (1 << (self.depth - 1)) != 0
    }

    fn scalar(
        &mut self,
        write: impl FnOnce(&mut Cursor<'b>) -> Result<(), Full>,
    ) -> Result<(), Full> {
        self.before_value()?;
        write(self.out)?;
        self.after_value();
        Ok(())
    }

    fn open(&mut self, object: bool, bracket: &[u8]) -> Result<(), Full> {
        assert!(
            self.depth < JSON_DEPTH_MAX,
            "JSON nested deeper than JSON_DEPTH_MAX"
        );
        self.before_value()?;
        self.out.put(bracket)?;
        let bit = 1 << self.depth;
        self.objects = if object {
            self.objects | bit
        } else {
            self.objects & !bit
        };
        self.has_items &= !bit;
        self.depth += 1;
        Ok(())
    }

    fn close(&mut self, object: bool, bracket: &[u8]) -> Result<(), Full> {
        assert!(
            self.depth > 0 && self.in_object() == object,
            "closing the wrong container"
        );
        assert!(!self.awaiting_value, "a key without a value");
        self.out.put(bracket)?;
        self.depth -= 1;
        self.after_value();
        Ok(())
    }

    /// Checks that a value may come here and writes the comma an array item needs.
    fn before_value(&mut self) -> Result<(), Full> {
        assert!(!self.done, "JSON has one top-level value");
        if self.in_object() {
            assert!(self.awaiting_value, "an object member needs a key first");
            self.awaiting_value = false;
            return Ok(());
        }
        self.separate()
    }

    fn separate(&mut self) -> Result<(), Full> {
        if self.depth == 0 {
            return Ok(());
        }
        let bit = 1 << (self.depth - 1);
        if self.has_items & bit != 0 {
            self.out.put(b",")?;
        }
        self.has_items |= bit;
        Ok(())
    }

    fn after_value(&mut self) {
        self.done = self.depth == 0;
    }
}

/// A JSON string: quotes, backslashes and control characters escaped (RFC 8259, section 7); every
/// other character, ASCII or not, as it is.
pub fn put_string(out: &mut Cursor<'_>, value: &str) -> Result<(), Full> {
    out.put(b"\"")?;
    let bytes = value.as_bytes();
    let mut plain_from = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[b'\\', b'u', b'0', b'0', digit(byte >> 4), digit(byte)],
            _ => continue,
        };
        out.put(&bytes[plain_from..at])?;
        out.put(escape)?;
        plain_from = at + 1;
    }
    out.put(&bytes[plain_from..])?;
    out.put(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(build: impl FnOnce(&mut Json<'_, '_>) -> Result<(), Full>) -> String {
        let mut buf = [0u8; 512];
        let mut out = Cursor::new(&mut buf);
        let mut json = Json::new(&mut out);
        build(&mut json).unwrap();
        json.finish();
        String::from_utf8(out.written().to_vec()).unwrap()
    }

    // Pins the bytes of nested objects and arrays with every kind of value: commas and colons in
    // the right places, none trailing.
    #[test]
    fn nested_values_are_exact() {
        let text = written(|json| {
            json.begin_object()?;
            json.key("services")?;
            json.begin_array()?;
            json.begin_object()?;
            json.key("name")?;
            json.string("web")?;
            json.key("replicas")?;
            json.u64(3)?;
            json.end_object()?;
            json.begin_object()?;
            json.end_object()?;
            json.end_array()?;
            json.key("empty")?;
            json.begin_array()?;
            json.end_array()?;
            json.key("list")?;
            json.begin_array()?;
            json.i64(-7)?;
            json.i64(i64::MIN)?;
            json.bool(true)?;
            json.bool(false)?;
            json.null()?;
            json.end_array()?;
            json.end_object()
        });
        assert_eq!(
            text,
            r#"{"services":[{"name":"web","replicas":3},{}],"empty":[],"list":[-7,-9223372036854775808,true,false,null]}"#
        );
    }

    // Pins string escaping: quotes, backslashes, named and \u escapes for control characters,
    // and non-ASCII text passed through as UTF-8.
    #[test]
    fn strings_are_escaped() {
        let text = written(|json| json.string("a\"b\\c\nd\re\tf\u{0}\u{1f}\u{7f}é✓"));
        assert_eq!(text, "\"a\\\"b\\\\c\\nd\\re\\tf\\u0000\\u001f\u{7f}é✓\"");
    }

    // Proves a top-level scalar is a complete document, and u64::MAX is written in full.
    #[test]
    fn top_level_scalar() {
        assert_eq!(written(|json| json.u64(u64::MAX)), "18446744073709551615");
    }

    // Proves running out of buffer is `Full` at every size short of the 15 bytes needed, never a
    // panic.
    #[test]
    fn small_buffer_is_full() {
        for size in 0..15 {
            let mut buf = vec![0u8; size];
            let mut out = Cursor::new(&mut buf);
            let mut json = Json::new(&mut out);
            let result = json
                .begin_object()
                .and_then(|()| json.key("name"))
                .and_then(|()| json.string("web\n"));
            assert_eq!(result, Err(Full), "size {size}");
        }
    }

    // Proves misuse is caught: a value in an object without a key asserts.
    #[test]
    #[should_panic(expected = "needs a key")]
    fn value_without_key_asserts() {
        let mut buf = [0u8; 64];
        let mut out = Cursor::new(&mut buf);
        let mut json = Json::new(&mut out);
        json.begin_object().unwrap();
        let _ = json.u64(1);
    }

    // Proves misuse is caught: closing an array with `end_object` asserts.
    #[test]
    #[should_panic(expected = "wrong container")]
    fn mismatched_close_asserts() {
        let mut buf = [0u8; 64];
        let mut out = Cursor::new(&mut buf);
        let mut json = Json::new(&mut out);
        json.begin_array().unwrap();
        let _ = json.end_object();
    }
}
