//! Reads a `cfg.data` the way the original scripts read it: they `source` it, so it is
//! shell. Each line holds assignments (`key=value`, optionally after `export`), a comment or
//! nothing; values are shell words with quotes, escapes, `$var` / `${var}` references to
//! earlier assignments and command substitutions. A value whose meaning depends on running
//! a command (`` `cat $workdir/nodes` ``) or on the environment is kept as written and
//! marked unknown.

use std::collections::HashMap;

use crate::error::Rejection;
use std::str::Chars;

/// One assignment, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// 1-based line number.
    pub line: usize,
    pub key: String,
    pub value: Value,
}

/// A value after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The expanded text; where part of it is unknown, that part as written.
    pub text: String,
    /// Why the value cannot be known without running the shell, if it cannot.
    pub unknown: Option<String>,
}

/// A line that is not shell assignments; `problem` says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub problem: String,
}

/// Every assignment of `text`, values expanded against the assignments before them.
pub fn assignments(text: &str) -> Result<Vec<Assignment>, SyntaxError> {
    let mut vars: HashMap<String, Value> = HashMap::new();
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let fail = |problem: String| SyntaxError { line, problem };
        let mut rest = raw.trim_end_matches('\r').trim_start();
        if let Some(after) = rest.strip_prefix("export") {
            if after.starts_with([' ', '\t']) {
                rest = after.trim_start();
            }
        }
        while !rest.is_empty() && !rest.starts_with('#') {
            let (key, after_key) = split_key(rest)
                .ok_or_else(|| fail(format!("expected key=value, got {:?}", raw.trim())))?;
            let mut chars = after_key.chars();
            let segments = word(&mut chars).map_err(|p| fail(format!("{key}: {p}")))?;
            let value = expand(&segments, &vars);
            vars.insert(key.to_string(), value.clone());
            out.push(Assignment {
                line,
                key: key.to_string(),
                value,
            });
            rest = chars.as_str().trim_start();
        }
    }
    Ok(out)
}

/// `NAME=` at the start of `text`: the name and what follows the `=`.
fn split_key(text: &str) -> Option<(&str, &str)> {
    let (key, rest) = text.split_once('=')?;
    let mut chars = key.chars();
    let first = chars.next()?;
    let valid = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some((key, rest))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `$name` or `${name}`
    Variable(String),
    /// A command substitution or an expansion sftsan does not evaluate, as written.
    Opaque(String),
}

/// One shell word, up to unquoted whitespace; `chars` is left after it.
fn word(chars: &mut Chars) -> Result<Vec<Segment>, Rejection> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let flush = |literal: &mut String, segments: &mut Vec<Segment>| {
        if !literal.is_empty() {
            segments.push(Segment::Literal(std::mem::take(literal)));
        }
    };
    loop {
        let before = chars.clone();
        let Some(c) = chars.next() else { break };
        match c {
            ' ' | '\t' => {
                *chars = before;
                break;
            }
            ';' | '&' | '|' | '<' | '>' | '(' | ')' => {
                return Err(Rejection(format!(
                    "unexpected {c:?}: cfg.data holds assignments, not commands"
                )))
            }
            '\'' => literal.push_str(&take_until(chars, '\'')?),
            '"' => {
                flush(&mut literal, &mut segments);
                segments.extend(double_quoted(chars)?);
            }
            '`' => {
                flush(&mut literal, &mut segments);
                let command = take_until(chars, '`')?;
                segments.push(Segment::Opaque(format!("`{command}`")));
            }
            '$' => {
                flush(&mut literal, &mut segments);
                segments.push(dollar(chars)?);
            }
            '\\' => literal.extend(chars.next()),
            c => literal.push(c),
        }
    }
    flush(&mut literal, &mut segments);
    Ok(segments)
}

/// What follows a `$`: a variable, a substitution, or a lone `$`.
fn dollar(chars: &mut Chars) -> Result<Segment, Rejection> {
    let rest = chars.as_str();
    if let Some(inner) = rest.strip_prefix('{') {
        let end = inner
            .find('}')
            .ok_or_else(|| Rejection::new("unterminated ${"))?;
        let name = &inner[..end];
        for _ in 0..end + 2 {
            chars.next();
        }
        return Ok(if is_name(name) {
            Segment::Variable(name.into())
        } else {
            Segment::Opaque(format!("${{{name}}}"))
        });
    }
    if rest.starts_with('(') {
        chars.next();
        let command = take_until(chars, ')')?;
        return Ok(Segment::Opaque(format!("$({command})")));
    }
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() {
        // `$1`-style and special parameters are a character each; a lone `$` is literal.
        return Ok(match chars.clone().next() {
            Some(c) if "0123456789@*#?$!-".contains(c) => {
                chars.next();
                Segment::Opaque(format!("${c}"))
            }
            _ => Segment::Literal("$".into()),
        });
    }
    for _ in 0..name.len() {
        chars.next();
    }
    Ok(if name.starts_with(|c: char| c.is_ascii_digit()) {
        Segment::Opaque(format!("${name}"))
    } else {
        Segment::Variable(name)
    })
}

fn is_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The inside of `"..."`, whose opening quote was consumed.
fn double_quoted(chars: &mut Chars) -> Result<Vec<Segment>, Rejection> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                if !literal.is_empty() || segments.is_empty() {
                    segments.push(Segment::Literal(literal));
                }
                return Ok(segments);
            }
            '\\' => match chars.next() {
                Some(escaped @ ('$' | '`' | '"' | '\\')) => literal.push(escaped),
                Some('\n') => {}
                Some(other) => {
                    literal.push('\\');
                    literal.push(other);
                }
                None => break,
            },
            '$' => {
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(dollar(chars)?);
            }
            '`' => {
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                let command = take_until(chars, '`')?;
                segments.push(Segment::Opaque(format!("`{command}`")));
            }
            c => literal.push(c),
        }
    }
    Err(Rejection::new("unterminated \""))
}

/// Text up to the closing `end`, which is consumed.
fn take_until(chars: &mut Chars, end: char) -> Result<String, Rejection> {
    let mut text = String::new();
    for c in chars.by_ref() {
        if c == end {
            return Ok(text);
        }
        text.push(c);
    }
    Err(Rejection(format!("unterminated {end}")))
}

fn expand(segments: &[Segment], vars: &HashMap<String, Value>) -> Value {
    let mut value = Value {
        text: String::new(),
        unknown: None,
    };
    for segment in segments {
        match segment {
            Segment::Literal(text) => value.text.push_str(text),
            Segment::Variable(name) => match vars.get(name) {
                Some(v) => {
                    value.text.push_str(&v.text);
                    if value.unknown.is_none() {
                        value.unknown.clone_from(&v.unknown);
                    }
                }
                None => {
                    value.text.push_str(&format!("${name}"));
                    value
                        .unknown
                        .get_or_insert_with(|| format!("${name} is not set in cfg.data"));
                }
            },
            Segment::Opaque(text) => {
                value.text.push_str(text);
                value
                    .unknown
                    .get_or_insert_with(|| format!("{text} needs the shell to run it"));
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Value {
        let all = assignments(text).unwrap();
        all.last().unwrap().value.clone()
    }

    fn known(text: &str) -> Value {
        Value {
            text: text.into(),
            unknown: None,
        }
    }

    #[test]
    fn words_are_read_like_bash() {
        assert_eq!(one("a=abc"), known("abc"));
        assert_eq!(one("a=abc   # comment"), known("abc"));
        assert_eq!(one("a=abc#def"), known("abc#def"));
        assert_eq!(one("a='a b'"), known("a b"));
        assert_eq!(one("a='$x'"), known("$x"));
        assert_eq!(one("a=\"a b\" #c"), known("a b"));
        assert_eq!(one("a=\"a\\\"b\""), known("a\"b"));
        assert_eq!(one("a=a\\ b"), known("a b"));
        assert_eq!(one("a=\\$x"), known("$x"));
        assert_eq!(one("a=/x/'y z'/\"w\""), known("/x/y z/w"));
        assert_eq!(one("a="), known(""));
        assert_eq!(one("a=\"\""), known(""));
        assert_eq!(one("a= # only a comment"), known(""));
        assert_eq!(one("a=x\r"), known("x"), "CRLF line ends");
        assert_eq!(one("export a=x"), known("x"));
        assert_eq!(one("a=cost$"), known("cost$"));
    }

    #[test]
    fn variables_expand_from_earlier_assignments() {
        assert_eq!(one("dmsnap=dmsnap\nsnaptype=$dmsnap"), known("dmsnap"));
        assert_eq!(one("v=vg\nd=/dev/${v}/x"), known("/dev/vg/x"));
        assert_eq!(one("v=vg\nd=\"/dev/$v/x\""), known("/dev/vg/x"));
        assert_eq!(one("v=vg\nd='$v'"), known("$v"));
        assert_eq!(one("a=1 b=$a"), known("1"), "several assignments on a line");
        assert_eq!(one("a=1\na=2\nb=$a"), known("2"), "the latest wins");
        let unset = one("d=$nothing/x");
        assert_eq!(
            unset.unknown.as_deref(),
            Some("$nothing is not set in cfg.data")
        );
        let later = assignments("b=$a\na=1").unwrap();
        assert!(later[0].value.unknown.is_some(), "only earlier lines count");
    }

    #[test]
    fn substitutions_are_unknown_and_spread() {
        let nodes = one("workdir=/root/sftsan/\nnodes=`cat $workdir/nodes`  # list");
        assert_eq!(nodes.text, "`cat $workdir/nodes`");
        assert_eq!(
            nodes.unknown.as_deref(),
            Some("`cat $workdir/nodes` needs the shell to run it")
        );
        assert!(one("a=$(hostname)").unknown.is_some());
        assert!(one("a=\"x`date`\"").unknown.is_some());
        assert!(one("a=$1").unknown.is_some());
        assert!(
            one("a=`pwd`\nb=$a/x").unknown.is_some(),
            "through a variable too"
        );
    }

    #[test]
    fn lines_that_are_not_assignments_are_errors_with_their_line() {
        let err = |text: &str| assignments(text).unwrap_err();
        assert_eq!(
            err("a=1\nsource ./common.sh\n"),
            SyntaxError {
                line: 2,
                problem: "expected key=value, got \"source ./common.sh\"".into()
            }
        );
        assert_eq!(err("=x").problem, "expected key=value, got \"=x\"");
        assert_eq!(err("a-b=x").problem, "expected key=value, got \"a-b=x\"");
        assert_eq!(err("a='x").problem, "a: unterminated '");
        assert_eq!(err("a=\"x").problem, "a: unterminated \"");
        assert_eq!(err("a=`x").problem, "a: unterminated `");
        assert_eq!(err("a=${x").problem, "a: unterminated ${");
        assert_eq!(err("a=1 b").problem, "expected key=value, got \"a=1 b\"");
        assert_eq!(
            err("a=1;b=2").problem,
            "a: unexpected ';': cfg.data holds assignments, not commands"
        );
    }
}
