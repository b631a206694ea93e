//! WebSocket framing (RFC 6455) with no idle buffers: frame headers are
//! parsed by tungstenite; bytes are kept only while a frame is incomplete.

use std::io::Cursor;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message (reassembled from fragments).
    Text(String),
    /// A ping, to be answered with a pong carrying the payload.
    Ping(Vec<u8>),
    /// A close frame.
    Close,
}

/// A framing violation; the connection is closed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Client frames must be masked (RFC 6455 §5.1).
    #[error("unmasked client frame")]
    Unmasked,
    /// Binary messages, reserved bits or opcodes.
    #[error("unsupported frame")]
    Unsupported,
    /// Over the configured message size.
    #[error("message too large")]
    TooLarge,
    /// Text that is not UTF-8.
    #[error("text is not UTF-8")]
    NotUtf8,
    /// A bad header.
    #[error("malformed frame header")]
    Malformed,
}

/// Reassembles frames across reads; holds no memory between complete frames.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
    fragments: Option<Vec<u8>>,
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

impl Decoder {
    /// Feeds bytes read from the socket (unmasked in place). Each complete,
    /// unfragmented text message is offered to `take_text` first, borrowed
    /// from `data`: if it takes it, nothing is copied (the acknowledgement
    /// of every delivered notification goes this way); the other complete
    /// messages go to `out`.
    pub fn feed(
        &mut self,
        data: &mut [u8],
        max: usize,
        take_text: &mut dyn FnMut(&str) -> bool,
        out: &mut Vec<Incoming>,
    ) -> Result<(), FrameError> {
        let mut owned;
        let buf: &mut [u8] = if self.pending.is_empty() {
            data
        } else {
            owned = std::mem::take(&mut self.pending);
            owned.extend_from_slice(data);
            &mut owned[..]
        };
        let mut pos = 0;
        loop {
            let mut cur = Cursor::new(&buf[pos..]);
            let Some((header, len)) =
                FrameHeader::parse(&mut cur).map_err(|_| FrameError::Malformed)?
            else {
                break;
            };
            let len = usize::try_from(len).map_err(|_| FrameError::TooLarge)?;
            if len > max {
                return Err(FrameError::TooLarge);
            }
            let start = pos + cur.position() as usize;
            if buf.len() - start < len {
                break;
            }
            let mask = header.mask.ok_or(FrameError::Unmasked)?;
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(FrameError::Unsupported);
            }
            let payload = &mut buf[start..start + len];
            unmask(payload, mask);
            pos = start + len;
            let whole_text = header.opcode == OpCode::Data(Data::Text) && header.is_final;
            if whole_text && self.fragments.is_none() {
                let text = std::str::from_utf8(payload).map_err(|_| FrameError::NotUtf8)?;
                if !take_text(text) {
                    out.push(Incoming::Text(text.to_owned()));
                }
                continue;
            }
            self.frame(header.opcode, header.is_final, payload.to_vec(), max, out)?;
        }
        if pos < buf.len() {
            if buf.len() - pos > max + 14 {
                return Err(FrameError::TooLarge);
            }
            self.pending = buf[pos..].to_vec();
        }
        Ok(())
    }

    fn frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: Vec<u8>,
        max: usize,
        out: &mut Vec<Incoming>,
    ) -> Result<(), FrameError> {
        let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| FrameError::NotUtf8);
        match opcode {
            OpCode::Data(Data::Text) if self.fragments.is_none() => {
                if fin {
                    out.push(Incoming::Text(text(payload)?));
                } else {
                    self.fragments = Some(payload);
                }
            }
            OpCode::Data(Data::Continue) => {
                let f = self.fragments.as_mut().ok_or(FrameError::Malformed)?;
                if f.len() + payload.len() > max {
                    return Err(FrameError::TooLarge);
                }
                f.extend_from_slice(&payload);
                if fin {
                    let whole = self.fragments.take().expect("fragments");
                    out.push(Incoming::Text(text(whole)?));
                }
            }
            OpCode::Control(Control::Ping) => out.push(Incoming::Ping(payload)),
            OpCode::Control(Control::Pong) => {}
            OpCode::Control(Control::Close) => out.push(Incoming::Close),
            _ => return Err(FrameError::Unsupported),
        }
        Ok(())
    }
}

/// Appends an unmasked server frame.
pub fn encode(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let header = FrameHeader {
        is_final: true,
        opcode,
        ..FrameHeader::default()
    };
    out.reserve(payload.len() + 10);
    header
        .format(payload.len() as u64, out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
}

/// Bytes to leave before a payload written in place (see [`finish_text`]).
pub const HEADER_ROOM: usize = 10;

/// Turns `buf` — [`HEADER_ROOM`] bytes, then a text payload written in
/// place — into a final, unmasked text frame by writing its header just
/// before the payload. Returns where the frame starts in `buf`.
pub fn finish_text(buf: &mut [u8]) -> usize {
    let len = buf.len() - HEADER_ROOM;
    let mut head = [0u8; HEADER_ROOM];
    head[0] = 0x81; // FIN, text
    let n = if len < 126 {
        head[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        head[1] = 126;
        head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    let start = HEADER_ROOM - n;
    buf[start..HEADER_ROOM].copy_from_slice(&head[..n]);
    start
}

/// Appends a text frame.
pub fn text(payload: &str, out: &mut Vec<u8>) {
    encode(OpCode::Data(Data::Text), payload.as_bytes(), out);
}

/// Appends a pong.
pub fn pong(payload: &[u8], out: &mut Vec<u8>) {
    encode(OpCode::Control(Control::Pong), payload, out);
}

/// Appends a close frame with a status code.
pub fn close(code: u16, out: &mut Vec<u8>) {
    encode(OpCode::Control(Control::Close), &code.to_be_bytes(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_in_place_matches_encoder() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = "x".repeat(len);
            let mut want = Vec::new();
            text(&payload, &mut want);
            let mut buf = vec![0u8; HEADER_ROOM];
            buf.extend_from_slice(payload.as_bytes());
            let start = finish_text(&mut buf);
            assert_eq!(&buf[start..], &want[..], "length {len}");
        }
    }

    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        assert!(payload.len() < 126);
        f.push(0x80 | payload.len() as u8);
        f.extend_from_slice(&mask);
        let mut p = payload.to_vec();
        unmask(&mut p, mask);
        f.extend(p);
        f
    }

    #[test]
    fn split_and_fragmented() {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let mut bytes = client_frame(1, false, b"he");
        bytes.extend(client_frame(0, true, b"llo"));
        bytes.extend(client_frame(9, true, b"p"));
        let (a, b) = bytes.split_at_mut(5);
        d.feed(a, 1000, &mut |_| false, &mut out).unwrap();
        assert!(out.is_empty() && !d.pending.is_empty());
        d.feed(b, 1000, &mut |_| false, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Incoming::Text("hello".into()),
                Incoming::Ping(b"p".to_vec())
            ]
        );
        assert!(d.pending.is_empty() && d.pending.capacity() == 0);
    }

    #[test]
    fn violations() {
        let mut out = Vec::new();
        let no = &mut |_: &str| false;
        let unmasked = [0x81, 0x01, b'a'];
        assert_eq!(
            Decoder::default().feed(&mut unmasked.clone(), 100, no, &mut out),
            Err(FrameError::Unmasked)
        );
        assert_eq!(
            Decoder::default().feed(&mut client_frame(1, true, &[b'a'; 50]), 10, no, &mut out),
            Err(FrameError::TooLarge)
        );
        assert_eq!(
            Decoder::default().feed(&mut client_frame(2, true, b"x"), 10, no, &mut out),
            Err(FrameError::Unsupported)
        );
        assert_eq!(
            Decoder::default().feed(&mut client_frame(1, true, &[0xff]), 10, no, &mut out),
            Err(FrameError::NotUtf8)
        );
    }

    #[test]
    fn whole_texts_offered_in_place() {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let mut bytes = client_frame(1, true, b"ack");
        bytes.extend(client_frame(1, true, b"other"));
        bytes.extend(client_frame(1, false, b"ac"));
        bytes.extend(client_frame(0, true, b"k"));
        let mut taken = Vec::new();
        let mut take = |t: &str| {
            taken.push(t.to_owned());
            t == "ack"
        };
        d.feed(&mut bytes, 100, &mut take, &mut out).unwrap();
        // A fragmented message is not offered: it was copied already.
        assert_eq!(taken, ["ack", "other"]);
        assert_eq!(
            out,
            vec![Incoming::Text("other".into()), Incoming::Text("ack".into())]
        );
    }
}
