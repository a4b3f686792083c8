//! Self-tests of the raw HTTP/2 client against the crate's own h2c [`Upstream`] (hyper's
//! h2 server): valid requests round-trip, and malformed ones reach the server byte for
//! byte (the upstream's wire record shows them) and are refused the way h2 refuses them.

use std::time::Duration;

use super::*;
use crate::testutil::within;
use crate::upstream::{check_pattern, Upstream};

const T: Duration = Duration::from_secs(10);

/// A valid request head for `path` on `up`, with `extra` fields appended.
fn head<'a>(
    method: &'a [u8],
    path: &'a [u8],
    authority: &'a [u8],
    extra: &[(&'a [u8], &'a [u8])],
) -> Vec<(&'a [u8], &'a [u8])> {
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", method),
        (b":scheme", b"http"),
        (b":authority", authority),
        (b":path", path),
    ];
    fields.extend_from_slice(extra);
    fields
}

#[test]
fn literal_block_encodes_exact_bytes_and_long_lengths() {
    let long = vec![b'v'; 200];
    let fields: [(&[u8], &[u8]); 3] = [(b"X-Up", b"a\r\nb"), (b":path", b" /sp "), (b"n", &long)];
    let block = encode_literal_block(&fields);
    assert_eq!(&block[..11], b"\x00\x04X-Up\x04a\r\nb");
    // 200 = 127 + 73: a 7-bit prefix full of ones, then 73.
    let at = block.len() - 200 - 2;
    assert_eq!(&block[at - 3..at + 2], b"\x00\x01n\x7f\x49");
    let decoded = loona_hpack::Decoder::new()
        .decode(&block)
        .expect("valid HPACK");
    let want: Vec<(Vec<u8>, Vec<u8>)> = fields
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(decoded, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_requests_round_trip_with_status_headers_and_body() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::h2c("raw-up").await;
        let authority = up.addr().to_string();
        let mut h2 = RawH2::connect(up.addr()).await?;
        assert!(
            !h2.peer_settings().is_empty(),
            "hyper announces its settings"
        );

        let id = h2.next_stream_id();
        assert_eq!(id, 1);
        let fields = head(
            b"GET",
            b"/echo?q=1",
            authority.as_bytes(),
            &[(b"x-test", b"a")],
        );
        h2.send_headers(id, &fields, true).await?;
        let out = h2.read_until_done(id, T).await;
        assert_eq!(out.status, Some(200), "{out:?}");
        assert!(
            out.completed() && out.rst.is_none() && !out.closed,
            "{out:?}"
        );
        assert_eq!(out.header("x-upstream"), Some(&b"raw-up"[..]), "{out:?}");
        assert_eq!(out.header("x-echo-path"), Some(&b"/echo?q=1"[..]));
        assert_eq!(out.header("x-echo-x-test"), Some(&b"a"[..]));
        assert!(out.body.is_empty());

        // A body in DATA frames, and a header block split over CONTINUATION frames (the
        // block is 69 bytes: HEADERS + 3 CONTINUATION).
        let id = h2.next_stream_id();
        let fields = head(b"POST", b"/echo", authority.as_bytes(), &[]);
        h2.send_headers_continued(id, &fields, false, 20).await?;
        h2.send_data(id, b"hello ", false).await?;
        h2.send_data(id, b"world", false).await?;
        h2.send_data(id, b"", true).await?;
        let out = h2.read_until_done(id, T).await;
        assert_eq!(out.status, Some(200), "{out:?}");
        assert_eq!(out.body_text(), "hello world");
        assert!(out.completed(), "{out:?}");

        let log = up.request_log();
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].method, http::Method::POST);
        assert_eq!(log[0].connection, log[1].connection);

        // One-byte pieces really are sent as that many frames: h2 allows a header block
        // at most 5 CONTINUATION frames (by default) and calls the rest a flood.
        let id = h2.next_stream_id();
        let fields = head(b"GET", b"/echo", authority.as_bytes(), &[]);
        h2.send_headers_continued(id, &fields, true, 1).await?;
        let out = h2.read_until_done(id, T).await;
        assert_eq!(out.goaway, Some(Reason::ENHANCE_YOUR_CALM), "{out:?}");
        assert_eq!(up.requests(), 2);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_flow_both_ways() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::h2c("raw-big").await;
        let authority = up.addr().to_string();
        let mut h2 = RawH2::connect(up.addr()).await?;
        // 1 MB down: far past the 64 KiB default windows, so WINDOW_UPDATEs must flow.
        let id = h2.next_stream_id();
        let fields = head(b"GET", b"/bytes?size=1000000", authority.as_bytes(), &[]);
        h2.send_headers(id, &fields, true).await?;
        let out = h2.read_until_done(id, T).await;
        assert_eq!(out.status, Some(200), "{out:?}");
        assert!(out.completed(), "{out:?}");
        assert_eq!(out.body.len(), 1_000_000);
        assert!(check_pattern(0, &out.body));
        // 300 kB up: send_data waits for the server's credit.
        let id = h2.next_stream_id();
        let fields = head(b"POST", b"/sink", authority.as_bytes(), &[]);
        h2.send_headers(id, &fields, false).await?;
        h2.send_data(id, &vec![b'x'; 300_000], true).await?;
        let out = h2.read_until_done(id, T).await;
        assert_eq!(out.status, Some(200), "{out:?}");
        assert_eq!(out.body_text(), r#"{"bytes":300000}"#);
        assert_eq!(up.bytes_received(), 300_000);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_header_is_sent_verbatim_and_reset_by_h2() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::h2c("raw-conn").await;
        let authority = up.addr().to_string();
        let mut h2 = RawH2::connect(up.addr()).await?;
        let id = h2.next_stream_id();
        let extra: [(&[u8], &[u8]); 1] = [(b"connection", b"keep-alive")];
        let fields = head(b"GET", b"/echo", authority.as_bytes(), &extra);
        h2.send_headers(id, &fields, true).await?;
        let out = h2.read_until_done(id, T).await;
        assert_eq!(out.rst, Some(Reason::PROTOCOL_ERROR), "{out:?}");
        assert_eq!(out.status, None, "{out:?}");
        assert!(
            !out.closed,
            "a stream error leaves the connection up: {out:?}"
        );
        // The same connection still serves a valid request.
        let id = h2.next_stream_id();
        let fields = head(b"GET", b"/echo", authority.as_bytes(), &[]);
        h2.send_headers(id, &fields, true).await?;
        let out = h2.read_until_done(id, T).await;
        assert_eq!(out.status, Some(200), "{out:?}");
        assert_eq!(
            up.requests(),
            1,
            "the malformed request never reached the handler"
        );
        up.wait_wire_quiet(Duration::from_millis(20), T).await;
        let wire = up.wire();
        assert_eq!(wire.len(), 1);
        let literal = b"\x00\x0aconnection\x0akeep-alive";
        assert!(
            wire[0].windows(literal.len()).any(|w| w == literal),
            "{}",
            up.wire_text()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uppercase_name_is_sent_verbatim_and_refused_by_h2() -> anyhow::Result<()> {
    within(async {
        let up = Upstream::h2c("raw-upper").await;
        let authority = up.addr().to_string();
        let mut h2 = RawH2::connect(up.addr()).await?;
        let id = h2.next_stream_id();
        let extra: [(&[u8], &[u8]); 1] = [(b"X-Upper", b"1")];
        let fields = head(b"GET", b"/echo", authority.as_bytes(), &extra);
        h2.send_headers(id, &fields, true).await?;
        let out = h2.read_until_done(id, T).await;
        // h2 0.4 rejects an invalid field name while decoding HPACK, which is a connection
        // error: GOAWAY(PROTOCOL_ERROR), not RST_STREAM.
        assert_eq!(out.goaway, Some(Reason::PROTOCOL_ERROR), "{out:?}");
        assert_eq!(out.status, None, "{out:?}");
        assert_eq!(h2.goaway().map(|(_, r)| r), Some(Reason::PROTOCOL_ERROR));
        assert!(
            h2.next_frame(T).await.is_none() && h2.is_closed(),
            "then it closes"
        );
        assert_eq!(up.requests(), 0);
        up.wait_wire_quiet(Duration::from_millis(20), T).await;
        let literal = b"\x00\x07X-Upper\x011";
        assert!(
            up.wire()[0].windows(literal.len()).any(|w| w == literal),
            "{}",
            up.wire_text()
        );
        Ok(())
    })
    .await
}
