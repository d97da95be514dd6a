//! Streaming decompression and recompression of rewritten bodies (`Content-Encoding`
//! identity, `gzip` and `deflate`).
//!
//! Every step handles a bounded slice of input and hands back what it produced, so no
//! buffer grows with the body, however well it compresses.

use std::io::{self, Write};

use flate2::Compression;
use flate2::write::{DeflateDecoder, DeflateEncoder, GzDecoder, GzEncoder};
use http::HeaderMap;
use http::header::CONTENT_ENCODING;

/// The content codings we can rewrite through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    /// No `Content-Encoding` (or `identity`).
    Identity,
    /// `gzip` (multi-member, as Go's reader).
    Gzip,
    /// `deflate`, raw RFC 1951 as kube-apiserver reads and writes it.
    Deflate,
}

impl Coding {
    /// The coding of a response when we can rewrite through it; `None` passes the body
    /// through untouched (`br`, `zstd`, stacked codings, anything unknown).
    ///
    /// Like Go's `Header.Get`, the match is exact and case-sensitive; we additionally read
    /// `identity` as no coding and refuse several `Content-Encoding` fields.
    pub(crate) fn of(headers: &HeaderMap) -> Option<Coding> {
        let mut values = headers.get_all(CONTENT_ENCODING).iter();
        let Some(first) = values.next() else {
            return Some(Coding::Identity);
        };
        if values.next().is_some() {
            return None;
        }
        match first.as_bytes() {
            b"" | b"identity" => Some(Coding::Identity),
            b"gzip" => Some(Coding::Gzip),
            b"deflate" => Some(Coding::Deflate),
            _ => None,
        }
    }
}

/// Largest input slice handed to a decompressor in one step. A deflate stream expands at
/// most ~1032:1, so one step yields at most a few MiB even for a crafted body, and in
/// practice the decompressor's own 32 KiB window caps it.
pub(crate) const STEP_INPUT: usize = 16 * 1024;

/// A streaming decompressor writing into a `Vec` we drain after every step.
#[derive(Debug)]
pub(crate) enum Decoder {
    Identity,
    Gzip(Box<GzDecoder<Vec<u8>>>),
    Deflate {
        inner: Box<DeflateDecoder<Vec<u8>>>,
        /// The final block was seen; anything after it is ignored (as Go's reader does).
        ended: bool,
    },
}

/// A corrupt or truncated compressed body.
pub(crate) type DecodeError = io::Error;

impl Decoder {
    pub(crate) fn new(coding: Coding) -> Self {
        match coding {
            Coding::Identity => Decoder::Identity,
            Coding::Gzip => Decoder::Gzip(Box::new(GzDecoder::new(Vec::new()))),
            Coding::Deflate => Decoder::Deflate {
                inner: Box::new(DeflateDecoder::new(Vec::new())),
                ended: false,
            },
        }
    }

    /// Feeds a prefix of `input` (at most [`STEP_INPUT`] bytes for compressed codings) and
    /// returns how many bytes were consumed. Decoded bytes are appended to `out` (for
    /// identity, the consumed input itself).
    pub(crate) fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        match self {
            Decoder::Identity => {
                out.extend_from_slice(input);
                Ok(input.len())
            }
            Decoder::Gzip(decoder) => {
                let slice = &input[..input.len().min(STEP_INPUT)];
                let n = decoder.write(slice)?;
                if n == 0 && !slice.is_empty() {
                    // The member (and its trailer) is complete and more input follows: Go's
                    // reader is multistream, so a new member must start here; garbage fails
                    // the next header parse.
                    decoder.try_finish()?;
                    out.append(decoder.get_mut());
                    **decoder = GzDecoder::new(Vec::new());
                    return Ok(0);
                }
                decoder.flush()?;
                out.append(decoder.get_mut());
                Ok(n)
            }
            Decoder::Deflate { inner, ended } => {
                if *ended {
                    return Ok(input.len());
                }
                let slice = &input[..input.len().min(STEP_INPUT)];
                let n = inner.write(slice)?;
                inner.flush()?;
                out.append(inner.get_mut());
                if n == 0 && !slice.is_empty() {
                    *ended = true;
                    return Ok(input.len());
                }
                Ok(n)
            }
        }
    }

    /// The body ended: checks that the stream is complete and flushes the last bytes.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        match self {
            Decoder::Identity => Ok(()),
            Decoder::Gzip(decoder) => {
                decoder.try_finish()?;
                out.append(decoder.get_mut());
                Ok(())
            }
            Decoder::Deflate { inner, .. } => {
                inner.try_finish()?;
                out.append(inner.get_mut());
                Ok(())
            }
        }
    }
}

/// A streaming compressor writing into a `Vec` we drain after every step.
#[derive(Debug)]
pub(crate) enum Encoder {
    Identity(Vec<u8>),
    Gzip(Box<GzEncoder<Vec<u8>>>),
    Deflate(Box<DeflateEncoder<Vec<u8>>>),
}

impl Encoder {
    /// Go's choices: gzip at the default level, deflate at best compression.
    pub(crate) fn new(coding: Coding) -> Self {
        match coding {
            Coding::Identity => Encoder::Identity(Vec::new()),
            Coding::Gzip => {
                Encoder::Gzip(Box::new(GzEncoder::new(Vec::new(), Compression::default())))
            }
            Coding::Deflate => Encoder::Deflate(Box::new(DeflateEncoder::new(
                Vec::new(),
                Compression::best(),
            ))),
        }
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Identity(buf) => {
                buf.extend_from_slice(data);
                Ok(())
            }
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Deflate(e) => e.write_all(data),
        }
    }

    /// Sync-flushes so that everything written so far can be decoded by the client now.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Identity(_) => Ok(()),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Deflate(e) => e.flush(),
        }
    }

    /// Writes the end of the stream.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        match self {
            Encoder::Identity(_) => Ok(()),
            Encoder::Gzip(e) => e.try_finish(),
            Encoder::Deflate(e) => e.try_finish(),
        }
    }

    /// Takes the compressed bytes produced so far.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        match self {
            Encoder::Identity(buf) => std::mem::take(buf),
            Encoder::Gzip(e) => std::mem::take(e.get_mut()),
            Encoder::Deflate(e) => std::mem::take(e.get_mut()),
        }
    }

    /// Bytes held in the output buffer (not counting the compressor's fixed state).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        match self {
            Encoder::Identity(buf) => buf.capacity(),
            Encoder::Gzip(e) => e.get_ref().capacity(),
            Encoder::Deflate(e) => e.get_ref().capacity(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn codings() {
        let mut h = HeaderMap::new();
        assert_eq!(Coding::of(&h), Some(Coding::Identity));
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(Coding::of(&h), Some(Coding::Gzip));
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("deflate"));
        assert_eq!(Coding::of(&h), Some(Coding::Deflate));
        for other in ["br", "GZIP", "gzip, br", "zstd", "x-gzip"] {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static(other));
            assert_eq!(Coding::of(&h), None, "{other}");
        }
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(Coding::of(&h), None);
    }
}
