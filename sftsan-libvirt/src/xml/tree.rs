//! A lossless XML element tree on quick-xml: every element, attribute (in order),
//! namespace declaration, text, comment and processing instruction of a document is kept,
//! so that a domain template comes back out with only what sftsan changed.

use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use std::borrow::Cow;

/// How deep elements may nest. libvirt's domain XML needs about ten levels; the bound keeps
/// a hostile document from exhausting the stack of the recursive walks below.
pub const MAX_DEPTH: usize = 128;

/// Why a document could not be read; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    /// The line the problem was found on.
    pub line: usize,
    /// What is wrong there, in words.
    pub problem: String,
}

/// A whole document: the root element and the markup around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Declaration, comments, processing instructions and doctype before the root, verbatim.
    pub prolog: Vec<String>,
    /// The document element.
    pub root: Element,
    /// Comments and processing instructions after the root, verbatim.
    pub epilog: Vec<String>,
}

/// An element with its attributes and everything inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The qualified name as written (`disk`, `sftsan:vm`).
    pub name: String,
    /// Attributes in document order, values unescaped; `xmlns` declarations included.
    pub attrs: Vec<(String, String)>,
    /// Child elements, text and markup, in document order.
    pub children: Vec<Node>,
}

/// One piece of an element's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data, unescaped.
    Text(String),
    /// A comment, CDATA section or processing instruction, verbatim.
    Markup(String),
}

impl Document {
    /// Reads a document: one root element, nested at most [`MAX_DEPTH`] deep.
    pub fn parse(text: &str) -> Result<Document, ParseError> {
        // A byte order mark is no part of the document (positions below count without it).
        Parser::new(text.strip_prefix('\u{feff}').unwrap_or(text)).run()
    }

    /// The whole document: prolog, root (indented), epilog.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        for markup in &self.prolog {
            out.push_str(markup);
            out.push('\n');
        }
        out.push_str(&self.root.to_xml());
        for markup in &self.epilog {
            out.push_str(markup);
            out.push('\n');
        }
        out
    }
}

impl Element {
    /// An empty element without attributes.
    pub fn new(name: &str) -> Element {
        Element {
            name: name.into(),
            ..Default::default()
        }
    }

    /// The element with an attribute set (see [`Element::set_attr`]).
    pub fn with_attr(mut self, name: &str, value: &str) -> Element {
        self.set_attr(name, value);
        self
    }

    /// The element with `child` appended as its last child.
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// The value of the attribute of that (qualified) name, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets an attribute in place, or appends it.
    pub fn set_attr(&mut self, name: &str, value: &str) {
        match self.attrs.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value.into(),
            None => self.attrs.push((name.into(), value.into())),
        }
    }

    /// The child elements, in order (text and markup skipped).
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// The child elements, in order, mutably.
    pub fn elements_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// The first child element of that name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name)
    }

    /// The first child element of that name, mutably.
    pub fn child_mut(&mut self, name: &str) -> Option<&mut Element> {
        self.elements_mut().find(|e| e.name == name)
    }

    /// Every child element of that name, in order.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.elements().filter(move |e| e.name == name)
    }

    /// Removes every child element of that name.
    pub fn remove_children(&mut self, name: &str) {
        self.children
            .retain(|n| !matches!(n, Node::Element(e) if e.name == name));
    }

    /// The element's character data (text and CDATA are not told apart here: CDATA stays
    /// markup, so this is the text outside it).
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Replaces all the element's content with `text`.
    pub fn set_text(&mut self, text: &str) {
        self.children = vec![Node::Text(text.into())];
    }

    /// The child element of that name, appended first if missing.
    pub fn ensure_child(&mut self, name: &str) -> &mut Element {
        let at = match self.children.iter().position(|n| is_element(n, name)) {
            Some(at) => at,
            None => {
                self.children.push(Node::Element(Element::new(name)));
                self.children.len() - 1
            }
        };
        match &mut self.children[at] {
            Node::Element(e) => e,
            _ => unreachable!("position() found an element"),
        }
    }

    /// Inserts `child` right after the last child element whose name is in `after` (the
    /// order libvirt writes), or first when there is none.
    pub fn insert_after(&mut self, after: &[&str], child: Element) {
        let at = self
            .children
            .iter()
            .rposition(|n| matches!(n, Node::Element(e) if after.contains(&e.name.as_str())))
            .map_or(0, |i| i + 1);
        self.children.insert(at, Node::Element(child));
    }

    /// The namespace URI the element's prefix is bound to, looked up on the element and
    /// then on `ancestors` (outermost first).
    pub fn namespace<'a>(&'a self, ancestors: &[&'a Element]) -> Option<&'a str> {
        let declaration = match self.name.split_once(':') {
            Some((prefix, _)) => format!("xmlns:{prefix}"),
            None => "xmlns".into(),
        };
        std::iter::once(self)
            .chain(ancestors.iter().rev().copied())
            .find_map(|e| e.attr(&declaration))
    }

    /// The tree without whitespace-only text (indentation) and with adjacent text joined
    /// (as a parser reads it), for comparing two documents.
    pub fn normalized(&self) -> Element {
        let mut children: Vec<Node> = Vec::new();
        for child in &self.children {
            match (child, children.last_mut()) {
                (Node::Text(t), Some(Node::Text(previous))) => previous.push_str(t),
                (Node::Element(e), _) => children.push(Node::Element(e.normalized())),
                (other, _) => children.push(other.clone()),
            }
        }
        children.retain(|n| !matches!(n, Node::Text(t) if t.trim().is_empty()));
        Element {
            name: self.name.clone(),
            attrs: self.attrs.clone(),
            children,
        }
    }

    /// The element as XML, indented two spaces a level the way libvirt writes it:
    /// whitespace-only text between elements is replaced by the indentation, any other
    /// text is written as it is.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        out.push('<');
        out.push_str(&self.name);
        for (name, value) in &self.attrs {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            out.push_str(&escape_attr(value));
            out.push('"');
        }
        let significant: Vec<&Node> = self
            .children
            .iter()
            .filter(|n| !matches!(n, Node::Text(t) if t.trim().is_empty()))
            .collect();
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        // Elements with text in them (mixed content) are written exactly, unindented.
        let layout = self.children.iter().all(|n| match n {
            Node::Text(t) => t.trim().is_empty(),
            _ => true,
        }) && significant.iter().any(|n| matches!(n, Node::Element(_)));
        if layout {
            for child in significant {
                out.push('\n');
                out.push_str(&"  ".repeat(depth + 1));
                match child {
                    Node::Element(e) => e.write(out, depth + 1),
                    Node::Markup(m) => out.push_str(m),
                    Node::Text(_) => unreachable!("whitespace was filtered"),
                }
            }
            out.push('\n');
            out.push_str(&"  ".repeat(depth));
        } else {
            for child in &self.children {
                match child {
                    Node::Element(e) => e.write(out, depth + 1),
                    Node::Text(t) => out.push_str(&escape_text(t)),
                    Node::Markup(m) => out.push_str(m),
                }
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

/// An attribute value as XML: the markup characters escaped, and tabs and line ends too,
/// which a parser would otherwise turn into spaces (they came from character references).
fn escape_attr(value: &str) -> Cow<'_, str> {
    let escaped = escape(value);
    if !escaped.contains(['\t', '\n', '\r']) {
        return escaped;
    }
    Cow::Owned(
        escaped
            .replace('\t', "&#9;")
            .replace('\n', "&#10;")
            .replace('\r', "&#13;"),
    )
}

/// Character data as XML: a carriage return stays one (a parser turns a raw one into a
/// line feed).
fn escape_text(text: &str) -> Cow<'_, str> {
    let escaped = escape(text);
    if escaped.contains('\r') {
        Cow::Owned(escaped.replace('\r', "&#13;"))
    } else {
        escaped
    }
}

fn is_element(node: &Node, name: &str) -> bool {
    matches!(node, Node::Element(e) if e.name == name)
}

/// Names as XML allows them (an ASCII-strict subset plus any non-ASCII letter), so that
/// what is read can always be written back and read again.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':' || !c.is_ascii())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c) || !c.is_ascii())
}

struct Parser<'a> {
    text: &'a str,
    reader: Reader<&'a [u8]>,
    /// Open elements, outermost first.
    open: Vec<Element>,
    prolog: Vec<String>,
    root: Option<Element>,
    epilog: Vec<String>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        // A `--` in a comment is refused inside the root (libvirt's parser refuses it too)
        // but accepted around it: templates document themselves with command lines there,
        // and those comments never reach libvirt.
        config.check_comments = false;
        config.trim_text(false);
        Parser {
            text,
            reader,
            open: Vec::new(),
            prolog: Vec::new(),
            root: None,
            epilog: Vec::new(),
        }
    }

    fn line_at(&self, position: u64) -> usize {
        let end = (position as usize).min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    /// An error at `position`. The problem stays one line: quick-xml's messages quote the
    /// document, which may hold line breaks.
    fn fail<T>(&self, position: u64, problem: impl Into<String>) -> Result<T, ParseError> {
        let problem: String = problem.into();
        Err(ParseError {
            line: self.line_at(position),
            problem: problem
                .replace('\n', "\\n")
                .replace('\r', "\\r")
                .replace('\t', "\\t"),
        })
    }

    fn run(mut self) -> Result<Document, ParseError> {
        loop {
            let start = self.reader.buffer_position();
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(e) => return self.fail(self.reader.error_position(), e.to_string()),
            };
            let end = self.reader.buffer_position();
            let Some(raw) = self.text.get(start as usize..end as usize) else {
                return self.fail(start, "cannot read the document here");
            };
            match event {
                Event::Start(tag) => {
                    let element = self.element(&tag, start)?;
                    if self.open.len() >= MAX_DEPTH {
                        return self.fail(start, format!("elements nest deeper than {MAX_DEPTH}"));
                    }
                    self.open.push(element);
                }
                Event::Empty(tag) => {
                    let element = self.element(&tag, start)?;
                    self.close(element, start)?;
                }
                Event::End(_) => {
                    // quick-xml has checked that the name matches the open element.
                    let element = self.open.pop().expect("an end tag closes an open element");
                    self.close(element, start)?;
                }
                Event::Text(text) => {
                    let text = text.xml10_content();
                    self.text_data(&text, start)?;
                }
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => {
                            let name = reference.xml10_content();
                            match resolve_predefined_entity(&name) {
                                Some(s) => s.to_string(),
                                None => {
                                    return self.fail(start, format!("unknown entity &{name};"))
                                }
                            }
                        }
                        Err(e) => return self.fail(start, e.to_string()),
                    };
                    self.text_data(&resolved, start)?;
                }
                Event::CData(_) | Event::Comment(_) | Event::PI(_) => self.markup(raw, start)?,
                Event::Decl(_) | Event::DocType(_) => {
                    if self.root.is_some() || !self.open.is_empty() {
                        return self
                            .fail(start, format!("{raw:?} must come before the root element"));
                    }
                    self.prolog.push(raw.to_string());
                }
                Event::Eof => break,
            }
        }
        if let Some(open) = self.open.last() {
            return self.fail(
                self.text.len() as u64,
                format!("<{}> is never closed", open.name),
            );
        }
        match self.root {
            Some(root) => Ok(Document {
                prolog: self.prolog,
                root,
                epilog: self.epilog,
            }),
            None => self.fail(self.text.len() as u64, "no root element"),
        }
    }

    fn element(&self, tag: &BytesStart, at: u64) -> Result<Element, ParseError> {
        let name = tag.name().0.to_string();
        if !valid_name(&name) {
            return self.fail(at, format!("{name:?} is not an element name"));
        }
        let mut element = Element::new(&name);
        for attr in tag.attributes() {
            let attr = match attr {
                Ok(a) => a,
                Err(e) => return self.fail(at, format!("<{name}>: {e}")),
            };
            let key = attr.key.0.to_string();
            if !valid_name(&key) {
                return self.fail(at, format!("<{name}>: {key:?} is not an attribute name"));
            }
            let value = match attr.normalized_value(XmlVersion::Implicit1_0) {
                Ok(v) => v.into_owned(),
                Err(e) => return self.fail(at, format!("<{name} {key}>: {e}")),
            };
            element.attrs.push((key, value));
        }
        Ok(element)
    }

    /// A complete element goes into its parent, or becomes the root.
    fn close(&mut self, element: Element, at: u64) -> Result<(), ParseError> {
        match self.open.last_mut() {
            Some(parent) => parent.children.push(Node::Element(element)),
            None if self.root.is_none() => self.root = Some(element),
            None => return self.fail(at, format!("a second root element <{}>", element.name)),
        }
        Ok(())
    }

    fn text_data(&mut self, text: &str, at: u64) -> Result<(), ParseError> {
        match self.open.last_mut() {
            Some(parent) => match parent.children.last_mut() {
                Some(Node::Text(t)) => t.push_str(text),
                _ => parent.children.push(Node::Text(text.into())),
            },
            None if text.trim().is_empty() => {}
            None => {
                let at = at + (text.len() - text.trim_start().len()) as u64;
                return self.fail(
                    at,
                    format!("text {:?} outside the root element", text.trim()),
                );
            }
        }
        Ok(())
    }

    fn markup(&mut self, raw: &str, at: u64) -> Result<(), ParseError> {
        let inside = !self.open.is_empty();
        if inside && raw.starts_with("<!--") && raw[4..raw.len() - 3].contains("--") {
            return self.fail(at, "a comment contains \"--\"");
        }
        match (self.open.last_mut(), &self.root) {
            (Some(parent), _) => parent.children.push(Node::Markup(raw.into())),
            (None, None) => self.prolog.push(raw.into()),
            (None, Some(_)) if raw.starts_with("<![CDATA[") => {
                return self.fail(at, "character data outside the root element")
            }
            (None, Some(_)) => self.epilog.push(raw.into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Document {
        Document::parse(text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn err(text: &str) -> String {
        Document::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn keeps_everything_and_reads_back_the_same() {
        let text = r#"<?xml version="1.0"?>
<!-- before -->
<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>a &amp; b &#x41;</name>
  <!-- inside -->
  <description><![CDATA[<raw>]]></description>
  <qemu:commandline><qemu:arg value='-x "y"'/></qemu:commandline>
</domain>
<!-- after -->
"#;
        let doc = parse(text);
        assert_eq!(doc.prolog.len(), 2);
        assert_eq!(doc.epilog, ["<!-- after -->"]);
        assert_eq!(doc.root.child("name").unwrap().text(), "a & b A");
        let arg = doc
            .root
            .child("qemu:commandline")
            .unwrap()
            .child("qemu:arg")
            .unwrap();
        assert_eq!(arg.attr("value"), Some("-x \"y\""));
        let again = parse(&doc.to_xml());
        assert_eq!(
            again.root.normalized(),
            doc.root.normalized(),
            "{}",
            doc.to_xml()
        );
        assert_eq!((again.prolog, again.epilog), (doc.prolog, doc.epilog));
    }

    #[test]
    fn namespaces_resolve_through_ancestors() {
        let doc = parse("<a xmlns:x='urn:x'><b><x:c/></b><y:d xmlns:y='urn:y'/><e/></a>");
        let b = doc.root.child("b").unwrap();
        let c = b.child("x:c").unwrap();
        assert_eq!(c.namespace(&[&doc.root, b]), Some("urn:x"));
        let d = doc.root.child("y:d").unwrap();
        assert_eq!(d.namespace(&[&doc.root]), Some("urn:y"));
        assert_eq!(doc.root.child("e").unwrap().namespace(&[&doc.root]), None);
    }

    #[test]
    fn malformed_documents_name_their_line() {
        assert_eq!(
            err("<a>\n<b>\n</a>"),
            "line 3: ill-formed document: expected `</b>`, but `</a>` was found"
        );
        assert_eq!(err("<a>\n<b/>"), "line 2: <a> is never closed");
        assert_eq!(err(""), "line 1: no root element");
        assert_eq!(err("<a/><b/>"), "line 1: a second root element <b>");
        assert_eq!(
            err("<a/>\ntext"),
            "line 2: text \"text\" outside the root element"
        );
        assert_eq!(err("<a>&nbsp;</a>"), "line 1: unknown entity &nbsp;");
        assert!(
            err("<a x='1' x='2'/>").starts_with("line 1: <a>:"),
            "{}",
            err("<a x='1' x='2'/>")
        );
        // Found by fuzzing: quick-xml quotes names as written, line breaks included.
        assert_eq!(
            err("<a>\n<b></b\nc>"),
            "line 2: ill-formed document: expected `</b>`, but `</b\\nc>` was found"
        );
        assert_eq!(
            parse("\u{feff}<a/>").root.name,
            "a",
            "a byte order mark is skipped"
        );
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(
            err(&deep),
            format!("line 1: elements nest deeper than {MAX_DEPTH}")
        );
    }

    #[test]
    fn edits_keep_the_order_of_the_rest() {
        let mut doc = parse("<d><name>x</name><memory>1</memory></d>");
        doc.root
            .insert_after(&["name"], Element::new("uuid").with_attr("a", "<&>"));
        doc.root.ensure_child("devices").set_attr("k", "v");
        let names: Vec<&str> = doc.root.elements().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["name", "uuid", "memory", "devices"]);
        assert_eq!(
            parse(&doc.to_xml()).root.normalized(),
            doc.root.normalized()
        );
    }
}
