//! Blocking HTTP/1.1 keep-alive GETs for the modes that time or count requests one by one
//! (`rate`, `count`): a fixed request, a response read to its last byte, nothing else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::Res;

pub fn get_request(path: &str, authority: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: loadgen\r\n\r\n")
}

pub fn connect(addr: SocketAddr) -> Res<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Writes one request and reads its whole response; whether the connection stays open.
pub fn exchange(s: &mut TcpStream, request: &[u8], buf: &mut [u8]) -> Res<bool> {
    s.write_all(request)?;
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err("response head larger than the buffer".into());
        }
        let n = s.read(&mut buf[filled..])?;
        if n == 0 {
            return Err("connection closed before the response".into());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = resp.parse(&buf[..filled])? else {
            continue;
        };
        if resp.code != Some(200) {
            return Err(format!("status {:?}", resp.code).into());
        }
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        let len: usize = header("content-length")
            .ok_or("response without Content-Length")?
            .parse()?;
        let keep_alive = header("connection").as_deref() != Some("close");
        let mut body = filled - head_len;
        if body > len {
            return Err("more bytes than the response's Content-Length".into());
        }
        let cap = buf.len();
        while body < len {
            let n = s.read(&mut buf[..(len - body).min(cap)])?;
            if n == 0 {
                return Err("connection closed inside the body".into());
            }
            body += n;
        }
        return Ok(keep_alive);
    }
}
