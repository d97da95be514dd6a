//! The parsed form of an HTML document used to compare our output with upstream's where the
//! bytes differ only by serialization: the sequence of start tags (lowercased name,
//! lowercased attribute names with entity-decoded values, self-closing flag), end tags
//! (lowercased), text, comments and doctypes.

use std::cell::RefCell;
use std::rc::Rc;

use lol_html::html_content::{Comment, Doctype, Element, TextChunk};
use lol_html::{DocumentContentHandlers, HtmlRewriter, Settings, element};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Start {
        name: String,
        attributes: Vec<(String, String)>,
        self_closing: bool,
    },
    End(String),
    Text(String),
    Comment(String),
    Doctype(Option<String>),
}

/// Parses `html` into events.
pub(crate) fn events(html: &str) -> Vec<Event> {
    let events = Rc::new(RefCell::new(Vec::new()));
    let push = {
        let events = Rc::clone(&events);
        move |event: Event| {
            let mut events = events.borrow_mut();
            if let (Event::Text(new), Some(Event::Text(prev))) = (&event, events.last_mut()) {
                prev.push_str(new);
                return;
            }
            events.push(event);
        }
    };
    let on_element = {
        let push = push.clone();
        move |el: &mut Element<'_, '_>| {
            push(Event::Start {
                name: el.tag_name(),
                attributes: el
                    .attributes()
                    .iter()
                    .map(|a| (a.name(), decode(&a.value())))
                    .collect(),
                self_closing: el.is_self_closing(),
            });
            if el.can_have_content() {
                let push = push.clone();
                let name = el.tag_name();
                let _ = el.on_end_tag(Box::new(move |_end| {
                    push(Event::End(name));
                    Ok(())
                }));
            }
            Ok(())
        }
    };
    let on_text = {
        let push = push.clone();
        move |t: &mut TextChunk<'_>| {
            if !t.as_str().is_empty() {
                push(Event::Text(t.as_str().to_owned()));
            }
            Ok(())
        }
    };
    let on_comment = {
        let push = push.clone();
        move |c: &mut Comment<'_>| {
            push(Event::Comment(c.text()));
            Ok(())
        }
    };
    let on_doctype = {
        let push = push.clone();
        move |d: &mut Doctype<'_>| {
            push(Event::Doctype(d.name()));
            Ok(())
        }
    };
    let settings = Settings::new()
        .append_element_content_handler(element!("*", on_element))
        .append_document_content_handler(
            DocumentContentHandlers::default()
                .text(on_text)
                .comments(on_comment)
                .doctype(on_doctype),
        );
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    rewriter.write(html.as_bytes()).expect("parses");
    rewriter.end().expect("parses");
    Rc::try_unwrap(events)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| rc.borrow().clone())
}

/// The `(tag, attribute, value)` triples of every attribute, in document order.
pub(crate) fn triples(html: &str) -> Vec<(String, String, String)> {
    events(html)
        .into_iter()
        .flat_map(|e| match e {
            Event::Start {
                name, attributes, ..
            } => attributes
                .into_iter()
                .map(|(a, v)| (name.clone(), a, v))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect()
}

/// The character references that occur in the vectors and in Go's attribute escaping.
fn decode(value: &str) -> String {
    value
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#13;", "\r")
        .replace("&amp;", "&")
}
