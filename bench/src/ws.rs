//! A minimal WebSocket client (RFC 6455) for many small devices: the
//! opening handshake, masked text frames out, unfragmented frames in.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Frame opcodes the devices handle.
pub mod op {
    /// A text message.
    pub const TEXT: u8 = 0x1;
    /// A close frame.
    pub const CLOSE: u8 = 0x8;
    /// A ping, answered with a pong.
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

/// The masking key of every client frame. RFC 6455 wants it unpredictable to
/// protect proxies; there are none on loopback, and the server only XORs.
const MASK: [u8; 4] = [0x5a, 0xc3, 0x1e, 0x77];

/// Largest handshake response accepted.
const MAX_HANDSHAKE: usize = 8192;

/// `setsockopt` of an int on the socket `fd`.
pub fn set_int_option(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is a socket the caller holds open; `v` is a c_int option
    // of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Connects to `to`, from `from` if given. With a source address the port is
/// chosen at `connect` (`IP_BIND_ADDRESS_NO_PORT`), so the whole 4-tuple
/// decides, and loopback TIME_WAIT ports are reused.
pub async fn connect_tcp(to: SocketAddr, from: Option<IpAddr>) -> io::Result<TcpStream> {
    let sock = match to {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = from {
        set_int_option(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            1,
        )?;
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = sock.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Performs the opening handshake with the `push-notification` subprotocol.
/// Bytes read past the response are left in `buf`.
pub async fn handshake(stream: &mut TcpStream, host: &str, buf: &mut Vec<u8>) -> io::Result<()> {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: push-notification\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&buf[..buf.len().min(40)]).into_owned();
                return Err(io::Error::other(format!("handshake refused: {line}")));
            }
            buf.drain(..end + 4);
            return Ok(());
        }
        if buf.len() > MAX_HANDSHAKE {
            return Err(io::Error::other("handshake response too large"));
        }
        buf.reserve(1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Appends a masked client frame with `payload` to `out`.
pub fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
}

/// A complete server frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its opcode.
    pub opcode: u8,
    /// Where its payload starts.
    pub start: usize,
    /// Where its payload (and the frame) ends.
    pub end: usize,
}

/// Parses the server frame at the start of `buf`: `Ok(None)` while it is
/// incomplete. Masked or fragmented server frames are errors (the origin
/// sends neither).
pub fn parse(buf: &[u8]) -> Result<Option<Frame>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x80 == 0 || b0 & 0x0f == 0 {
        return Err("fragmented server frame");
    }
    if b1 & 0x80 != 0 {
        return Err("masked server frame");
    }
    let (len, start): (usize, usize) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (
                usize::try_from(u64::from_be_bytes(b)).map_err(|_| "frame too large")?,
                10,
            )
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    let end = start.checked_add(len).ok_or("frame too large")?;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Frame {
        opcode: b0 & 0x0f,
        start,
        end,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmask(frame: &[u8], hl: usize) -> Vec<u8> {
        let mask = &frame[hl..hl + 4];
        frame[hl + 4..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i & 3])
            .collect()
    }

    #[test]
    fn encodes_masked_frames() {
        let mut out = Vec::new();
        encode(op::TEXT, b"hello", &mut out);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 5);
        assert_eq!(unmask(&out, 2), b"hello");
        let long = vec![b'x'; 300];
        out.clear();
        encode(op::TEXT, &long, &mut out);
        assert_eq!(out[1], 0x80 | 126);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 300);
        assert_eq!(unmask(&out, 4), long);
    }

    #[test]
    fn parses_server_frames() {
        assert_eq!(parse(&[0x81]).unwrap(), None);
        assert_eq!(
            parse(&[0x81, 2, b'h', b'i', 0x89]).unwrap(),
            Some(Frame {
                opcode: op::TEXT,
                start: 2,
                end: 4
            })
        );
        assert_eq!(parse(&[0x81, 3, b'h', b'i']).unwrap(), None);
        let mut big = vec![0x81, 126, 1, 44];
        assert_eq!(parse(&big).unwrap(), None);
        big.resize(4 + 300, b'a');
        assert_eq!(parse(&big).unwrap().unwrap().end, 304);
        assert!(parse(&[0x01, 0]).is_err());
        assert!(parse(&[0x81, 0x80]).is_err());
    }
}
