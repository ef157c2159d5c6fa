//! LVM's configuration text, the syntax of VG metadata: `name = value` pairs and `name { ... }`
//! sections; values are integers, decimals, double-quoted strings (with `\"` and `\\` escapes)
//! or flat arrays of those; `#` starts a comment (lvm2 `libdm/libdm-config.c`).
//!
//! A small explicit parser: one pass over the bytes, nesting depth and item count bounded, every
//! error naming the line.

/// A parsed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A decimal number.
    Float(f64),
    /// A string, escapes resolved.
    Str(String),
    /// A flat array of scalars.
    Array(Vec<Value>),
    /// A section.
    Section(Section),
}

/// The entries of a section (or of the whole text), in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Section {
    /// `(name, value)` pairs.
    pub entries: Vec<(String, Value)>,
}

impl Section {
    /// The first value named `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(name, _)| name == key).map(|(_, value)| value)
    }

    /// The subsection named `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key) {
            Some(Value::Section(section)) => Some(section),
            _ => None,
        }
    }

    /// The integer named `key`.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(Value::Int(value)) => Some(*value),
            _ => None,
        }
    }

    /// The string named `key`.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(value)) => Some(value),
            _ => None,
        }
    }

    /// The subsections, with their names.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.entries.iter().filter_map(|(name, value)| match value {
            Value::Section(section) => Some((name.as_str(), section)),
            _ => None,
        })
    }
}

/// Why the text could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
    /// What was expected.
    pub problem: String,
}

/// Deepest section nesting accepted (VG metadata uses 4 levels).
const MAX_DEPTH: usize = 16;
/// Most values accepted in one text (a VG with thousands of LVs has tens of thousands).
const MAX_ITEMS: usize = 1 << 20;

/// Parses a whole text as the body of an unnamed top-level section.
pub fn parse(text: &[u8]) -> Result<Section, SyntaxError> {
    let mut parser = Parser { text, at: 0, line: 1, items: 0 };
    let section = parser.body(0)?;
    match parser.peek() {
        None => Ok(section),
        Some(_) => Err(parser.error("'}' without a matching '{'")),
    }
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    line: usize,
    items: usize,
}

impl Parser<'_> {
    fn error(&self, problem: impl Into<String>) -> SyntaxError {
        SyntaxError { line: self.line, problem: problem.into() }
    }

    /// The next byte that is not blank or in a comment, without consuming it.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&byte) = self.text.get(self.at) {
            match byte {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' | 0 => {}
                b'#' => {
                    while self.text.get(self.at).is_some_and(|&b| b != b'\n') {
                        self.at += 1;
                    }
                    continue;
                }
                _ => return Some(byte),
            }
            self.at += 1;
        }
        None
    }

    fn expect(&mut self, wanted: u8) -> Result<(), SyntaxError> {
        if self.peek() == Some(wanted) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected '{}'", wanted as char)))
        }
    }

    fn count_item(&mut self) -> Result<(), SyntaxError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(self.error(format!("more than {MAX_ITEMS} values")));
        }
        Ok(())
    }

    /// Entries up to a closing '}' (not consumed) or the end of the text.
    fn body(&mut self, depth: usize) -> Result<Section, SyntaxError> {
        let mut section = Section::default();
        while let Some(byte) = self.peek() {
            if byte == b'}' {
                break;
            }
            let name = self.word()?;
            self.count_item()?;
            let value = match self.peek() {
                Some(b'=') => {
                    self.at += 1;
                    self.value()?
                }
                Some(b'{') => {
                    if depth + 1 >= MAX_DEPTH {
                        return Err(self.error(format!("sections nested more than {MAX_DEPTH} deep")));
                    }
                    self.at += 1;
                    let inner = self.body(depth + 1)?;
                    self.expect(b'}')?;
                    Value::Section(inner)
                }
                _ => return Err(self.error(format!("expected '=' or '{{' after \"{name}\""))),
            };
            section.entries.push((name, value));
        }
        Ok(section)
    }

    /// A name: a run of bytes that are not blank, punctuation of the syntax, or quotes.
    fn word(&mut self) -> Result<String, SyntaxError> {
        let start = self.at;
        while self.text.get(self.at).is_some_and(|&b| !b.is_ascii_whitespace() && !b"#={}[],\"'".contains(&b) && b != 0)
        {
            self.at += 1;
        }
        let word = self.text.get(start..self.at).unwrap_or_default();
        if word.is_empty() {
            return Err(self.error("expected a name"));
        }
        Ok(String::from_utf8_lossy(word).into_owned())
    }

    fn value(&mut self) -> Result<Value, SyntaxError> {
        if self.peek() != Some(b'[') {
            return self.scalar();
        }
        self.at += 1;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(b']') {
                self.at += 1;
                return Ok(Value::Array(items));
            }
            self.count_item()?;
            items.push(self.scalar()?);
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {}
                _ => return Err(self.error("expected ',' or ']' in an array")),
            }
        }
    }

    fn scalar(&mut self) -> Result<Value, SyntaxError> {
        match self.peek() {
            Some(quote @ (b'"' | b'\'')) => {
                self.at += 1;
                self.string(quote)
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("expected a number, a string or an array")),
        }
    }

    /// A quoted string after its opening quote; a backslash takes the next byte literally.
    fn string(&mut self, quote: u8) -> Result<Value, SyntaxError> {
        let mut bytes = Vec::new();
        loop {
            let Some(&byte) = self.text.get(self.at) else {
                return Err(self.error("string not closed"));
            };
            self.at += 1;
            match byte {
                b'\\' => {
                    let Some(&escaped) = self.text.get(self.at) else {
                        return Err(self.error("string not closed"));
                    };
                    self.at += 1;
                    bytes.push(escaped);
                }
                _ if byte == quote => return Ok(Value::Str(String::from_utf8_lossy(&bytes).into_owned())),
                b'\n' => {
                    self.line += 1;
                    bytes.push(byte);
                }
                _ => bytes.push(byte),
            }
        }
    }

    fn number(&mut self) -> Result<Value, SyntaxError> {
        let start = self.at;
        while self.text.get(self.at).is_some_and(|&b| b.is_ascii_digit() || b == b'-' || b == b'.') {
            self.at += 1;
        }
        let digits = std::str::from_utf8(self.text.get(start..self.at).unwrap_or_default()).unwrap_or_default();
        if let Ok(value) = digits.parse::<i64>() {
            return Ok(Value::Int(value));
        }
        digits.parse::<f64>().map(Value::Float).map_err(|_| self.error(format!("bad number \"{digits}\"")))
    }
}
