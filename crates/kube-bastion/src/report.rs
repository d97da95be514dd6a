//! An error and its causes on one log line.
//!
//! The proxy's errors print kube-apiserver's message (`dial tcp 10.0.0.1:80: connection
//! refused`), which often already ends with its cause's text; [`Report`] walks the
//! `source()` chain and adds each cause that the text so far does not already end with, so a
//! log line carries the whole chain once.

use std::error::Error;
use std::fmt;

/// Displays `error: cause: cause ...`, skipping causes already spelled out.
pub(crate) struct Report<'a>(pub(crate) &'a (dyn Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("dial tcp 10.0.0.1:80: {source}")]
    struct Dial {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("backend unreachable")]
    struct Outer {
        #[source]
        source: Dial,
    }

    #[test]
    fn causes_are_listed_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let dial = Dial { source: refused() };
        assert_eq!(Report(&dial).to_string(), "dial tcp 10.0.0.1:80: refused");
        let outer = Outer {
            source: Dial { source: refused() },
        };
        assert_eq!(
            Report(&outer).to_string(),
            "backend unreachable: dial tcp 10.0.0.1:80: refused"
        );
    }
}
