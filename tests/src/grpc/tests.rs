//! Self-tests of the gRPC echo server: interleaved bidi echo, OK and custom statuses via
//! trailers (through tonic and as raw HTTP/2 trailers), and unary calls.

use bytes::{BufMut, BytesMut};
use http::Request;
use prost::Message as _;
use tokio::sync::mpsc;

use super::*;
use crate::client::{self, BodyReader, Client};
use crate::testutil::{header, within};

fn msg(text: &str, seq: u32) -> EchoMsg {
    EchoMsg {
        text: text.to_owned(),
        seq,
    }
}

/// A request stream fed from a channel, so the test can interleave sends and receives.
fn outbound(
    fail_code: Option<i32>,
) -> (
    mpsc::Sender<EchoMsg>,
    tonic::Request<impl Stream<Item = EchoMsg> + Send + 'static>,
) {
    let (tx, rx) = mpsc::channel::<EchoMsg>(4);
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut req = tonic::Request::new(stream);
    if let Some(code) = fail_code {
        req.metadata_mut()
            .insert("x-fail-code", code.to_string().parse().expect("ascii"));
    }
    (tx, req)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_echoes_each_message_as_it_arrives_then_ends_ok() -> anyhow::Result<()> {
    within(async {
        let server = GrpcServer::start("g1").await;
        let mut client = connect(server.addr()).await?;
        let (tx, req) = outbound(None);
        let mut inbound = client.bidi(req).await?.into_inner();
        for seq in 1..=3 {
            tx.send(msg(&format!("hello {seq}"), seq)).await?;
            // The reply arrives while the request stream is still open.
            let reply = inbound.message().await?.expect("echo");
            assert_eq!(reply, msg(&format!("hello {seq} from g1"), seq));
        }
        drop(tx);
        assert_eq!(
            inbound.message().await?,
            None,
            "ends OK after the half-close"
        );
        let trailers = inbound.trailers().await?.expect("trailers");
        assert_eq!(header(trailers.as_ref(), "grpc-status"), "0");
        assert_eq!(server.calls(), 1);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_ends_with_the_requested_status() -> anyhow::Result<()> {
    within(async {
        let server = GrpcServer::start("g2").await;
        let mut client = connect(server.addr()).await?;
        let (tx, req) = outbound(Some(9));
        let mut inbound = client.bidi(req).await?.into_inner();
        tx.send(msg("a", 1)).await?;
        assert_eq!(inbound.message().await?, Some(msg("a from g2", 1)));
        drop(tx);
        let status = inbound.message().await.expect_err("must end with status 9");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), FAIL_MESSAGE);
        let md = server.last_metadata().expect("metadata recorded");
        assert_eq!(header(&md, "x-fail-code"), "9");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_echoes_or_fails_on_request() -> anyhow::Result<()> {
    within(async {
        let server = GrpcServer::start("g3").await;
        let mut client = connect(server.addr()).await?;
        let reply = client.unary(msg("one", 7)).await?.into_inner();
        assert_eq!(reply, msg("one from g3", 7));
        let mut req = tonic::Request::new(msg("two", 8));
        req.metadata_mut().insert("x-fail-code", "14".parse()?);
        let status = client.unary(req).await.expect_err("must fail");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), FAIL_MESSAGE);
        let mut req = tonic::Request::new(msg("three", 9));
        req.metadata_mut().insert("x-fail-code", "nope".parse()?);
        let status = client.unary(req).await.expect_err("must fail");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(server.calls(), 3);
        Ok(())
    })
    .await
}

/// Length-prefixed gRPC message framing (uncompressed).
fn grpc_frame(m: &EchoMsg) -> bytes::Bytes {
    let payload = m.encode_to_vec();
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(0);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(&payload);
    buf.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_travels_in_real_http2_trailers() -> anyhow::Result<()> {
    within(async {
        let server = GrpcServer::start("g4").await;
        let c = Client::h2c(server.addr()).await?;
        let req = Request::post("/corridor.test.Echo/Bidi")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-fail-code", "9")
            .body(client::full(grpc_frame(&msg("raw", 5))))?;
        let resp = c.send(req).await?;
        assert_eq!(resp.status(), http::StatusCode::OK);
        assert_eq!(header(resp.headers(), "content-type"), "application/grpc");
        let mut r = BodyReader::new(resp.into_body());
        let body = {
            let mut out = Vec::new();
            while let Some(d) = r.next_data().await? {
                out.extend_from_slice(&d);
            }
            out
        };
        assert_eq!(body[0], 0, "uncompressed");
        let len = u32::from_be_bytes(body[1..5].try_into()?) as usize;
        assert_eq!(body.len(), 5 + len);
        assert_eq!(EchoMsg::decode(&body[5..])?, msg("raw from g4", 5));
        let trailers = r.trailers().expect("HTTP/2 trailers");
        assert_eq!(header(trailers, "grpc-status"), "9");
        assert_eq!(header(trailers, "grpc-message"), FAIL_MESSAGE_ON_WIRE);
        Ok(())
    })
    .await
}
