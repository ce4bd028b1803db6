//! How a lane reaches its peer: bulk batches one after another on one
//! `ForwardStream` (unary `Forward` for a peer without it), urgent ones as
//! unary calls, each batch under the delivery deadline.

use std::time::Duration;

use tonic::transport::Channel;

use crate::pb;
use crate::pb::federation_client::FederationClient;

/// How a lane reaches its peer. With `streamed`, batches go one after
/// another on one `ForwardStream`, opened when first needed and closed when
/// the lane goes idle or anything goes wrong; a peer without it (an older
/// version: UNIMPLEMENTED) gets unary `Forward` calls from then on.
/// Without, every batch is a unary call.
pub(super) struct Transport {
    pub(super) client: FederationClient<Channel>,
    /// Whether this lane streams its batches when the peer can.
    wants_stream: bool,
    /// Whether it does now (false after the peer answered UNIMPLEMENTED,
    /// until the lane next goes idle: a peer may be upgraded meanwhile).
    streamed: bool,
    stream: Option<BatchStream>,
    /// A batch's deadline on the stream, as a unary call's (the channel's
    /// own timeout only covers a call until its response headers).
    timeout: Duration,
}

struct BatchStream {
    batches: tokio::sync::mpsc::Sender<pb::ForwardRequest>,
    answers: tonic::Streaming<pb::ForwardResponse>,
}

impl Transport {
    pub(super) fn new(
        client: FederationClient<Channel>,
        streamed: bool,
        timeout: Duration,
    ) -> Transport {
        Transport {
            client,
            wants_stream: streamed,
            streamed,
            stream: None,
            timeout,
        }
    }

    /// Ends the open stream, if any (the peer sees it closed). The lane
    /// goes idle: a peer that did not offer the stream is asked again next
    /// time.
    pub(super) fn close(&mut self) {
        self.stream = None;
        self.streamed = self.wants_stream;
    }

    /// Sends one batch and returns the peer's answer to it. On a stream
    /// that ended meanwhile (the peer restarted, or closed it shutting
    /// down) this fails like a unary call to a peer that went away, and the
    /// lane retries as it would then, on a new stream.
    pub(super) async fn forward(
        &mut self,
        batch: pb::ForwardRequest,
    ) -> Result<pb::ForwardResponse, tonic::Status> {
        if !self.streamed {
            return self.client.forward(batch).await.map(|r| r.into_inner());
        }
        let deadline = self.timeout;
        let result = tokio::time::timeout(deadline, self.exchange(batch))
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "the peer did not answer the batch within {} ms",
                    deadline.as_millis()
                )))
            });
        if result.is_err() {
            // Whatever went wrong, the next batch starts a new stream.
            self.close();
        }
        result
    }

    async fn exchange(
        &mut self,
        batch: pb::ForwardRequest,
    ) -> Result<pb::ForwardResponse, tonic::Status> {
        let gone = || tonic::Status::unavailable("the peer ended the batch stream");
        let stream = match &mut self.stream {
            Some(stream) => {
                if stream.batches.send(batch).await.is_err() {
                    return Err(gone());
                }
                stream
            }
            None => {
                // The first batch goes with the stream's opening, as a
                // unary call's request does: a peer whose answers are lost
                // on the way still receives (and stores) it. A copy is kept
                // for a peer that turns out not to offer the stream.
                let (batches, rx) = tokio::sync::mpsc::channel(1);
                let first = batch.clone();
                if batches.try_send(batch).is_err() {
                    return Err(gone());
                }
                match self
                    .client
                    .forward_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                {
                    Ok(answers) => self.stream.insert(BatchStream {
                        batches,
                        answers: answers.into_inner(),
                    }),
                    Err(s) if s.code() == tonic::Code::Unimplemented => {
                        tracing::info!(
                            "the peer does not offer ForwardStream: unary calls from now on"
                        );
                        self.streamed = false;
                        return self.client.forward(first).await.map(|r| r.into_inner());
                    }
                    Err(s) => return Err(s),
                }
            }
        };
        stream.answers.message().await?.ok_or_else(gone)
    }
}

#[cfg(test)]
mod tests {
    //! The transport alone, against a stand-in peer over plain TCP on
    //! loopback (the integration tests run it between real nodes over
    //! mutual TLS).

    use std::sync::atomic::{AtomicUsize, Ordering};

    use tonic::{Request, Response, Status};

    use std::sync::Arc;

    use super::*;
    use crate::pb::federation_server::{Federation, FederationServer};

    /// A peer that answers each batch with as many results as it had
    /// envelopes, numbered in its `message`; counts streams and calls.
    #[derive(Default)]
    struct Peer {
        offers_stream: bool,
        /// Ends each stream after this many answers.
        answers_per_stream: Option<usize>,
        /// Never answers on a stream (nor sends its response headers).
        silent: bool,
        streams: AtomicUsize,
        streamed: Arc<AtomicUsize>,
        unary: AtomicUsize,
    }

    fn answer(batch: &pb::ForwardRequest, n: usize) -> pb::ForwardResponse {
        pb::ForwardResponse {
            results: batch
                .envelopes
                .iter()
                .map(|_| pb::ForwardResult {
                    code: 0,
                    message: n.to_string(),
                    receipt: None,
                })
                .collect(),
        }
    }

    type Answers = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ForwardResponse, Status>> + Send>,
    >;

    #[tonic::async_trait]
    impl Federation for Arc<Peer> {
        async fn forward(
            &self,
            r: Request<pb::ForwardRequest>,
        ) -> Result<Response<pb::ForwardResponse>, Status> {
            let n = self.unary.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(answer(r.get_ref(), n)))
        }
        type ForwardStreamStream = Answers;
        async fn forward_stream(
            &self,
            r: Request<tonic::Streaming<pb::ForwardRequest>>,
        ) -> Result<Response<Answers>, Status> {
            if !self.offers_stream {
                return Err(Status::unimplemented("not here"));
            }
            let mut inbound = r.into_inner();
            if self.silent {
                // Takes what it is sent and never answers, not even with
                // the response's headers (as when its answers are lost).
                while let Ok(Some(_)) = inbound.message().await {
                    self.streamed.fetch_add(1, Ordering::SeqCst);
                }
                return Err(Status::cancelled("gone"));
            }
            self.streams.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let (limit, streamed) = (
                self.answers_per_stream.unwrap_or(usize::MAX),
                self.streamed.clone(),
            );
            tokio::spawn(async move {
                let mut answered = 0;
                while let Ok(Some(batch)) = inbound.message().await {
                    let n = streamed.fetch_add(1, Ordering::SeqCst);
                    if tx.send(Ok(answer(&batch, n))).await.is_err() {
                        return;
                    }
                    answered += 1;
                    if answered == limit {
                        return;
                    }
                }
            });
            Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
        }
        async fn push_status(
            &self,
            _: Request<pb::PushStatusRequest>,
        ) -> Result<Response<pb::PushStatusResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn node_info(
            &self,
            _: Request<pb::NodeInfoRequest>,
        ) -> Result<Response<pb::NodeInfoResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn get_checkpoint(
            &self,
            _: Request<pb::GetCheckpointRequest>,
        ) -> Result<Response<pb::CheckpointNote>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn get_consistency_proof(
            &self,
            _: Request<pb::ConsistencyProofRequest>,
        ) -> Result<Response<pb::ConsistencyProof>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn cosign(
            &self,
            _: Request<pb::CosignRequest>,
        ) -> Result<Response<pb::CosignResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn get_witnessed(
            &self,
            _: Request<pb::GetWitnessedRequest>,
        ) -> Result<Response<pb::CheckpointNote>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn get_directory(
            &self,
            _: Request<pb::GetDirectoryRequest>,
        ) -> Result<Response<pb::SignedDirectory>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    async fn start(peer: Peer) -> (Arc<Peer>, Transport) {
        let peer = Arc::new(peer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FederationServer::new(peer.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let out = Transport::new(
            FederationClient::new(channel),
            true,
            Duration::from_millis(500),
        );
        (peer, out)
    }

    fn batch(n: usize) -> pb::ForwardRequest {
        pb::ForwardRequest {
            envelopes: vec![pb::Envelope::default(); n],
            urgent: false,
        }
    }

    /// Which answer of the peer this is (its count when it answered).
    fn nth(r: &pb::ForwardResponse) -> &str {
        &r.results[0].message
    }

    #[tokio::test]
    async fn batches_follow_one_another_on_one_stream_until_it_is_closed() {
        let (peer, mut out) = start(Peer {
            offers_stream: true,
            ..Default::default()
        })
        .await;
        for (i, size) in [3, 1, 256].into_iter().enumerate() {
            let r = out.forward(batch(size)).await.unwrap();
            assert_eq!(r.results.len(), size, "one result per envelope");
            assert_eq!(nth(&r), i.to_string(), "answers in order");
        }
        assert_eq!(peer.streams.load(Ordering::SeqCst), 1);
        out.close();
        out.forward(batch(2)).await.unwrap();
        assert_eq!(
            peer.streams.load(Ordering::SeqCst),
            2,
            "a new stream after close"
        );
        assert_eq!(peer.unary.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_peer_without_the_stream_gets_unary_calls() {
        let (peer, mut out) = start(Peer::default()).await;
        for i in 0..3 {
            let r = out.forward(batch(2)).await.unwrap();
            assert_eq!(nth(&r), i.to_string());
        }
        assert_eq!(peer.unary.load(Ordering::SeqCst), 3);
        assert!(!out.streamed, "asked once, then unary");
        out.close();
        assert!(out.streamed, "asked again after the lane was idle");
        out.forward(batch(1)).await.unwrap();
        assert_eq!(peer.unary.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_stream_the_peer_ended_fails_one_batch_and_the_next_goes_on_a_new_one() {
        let (peer, mut out) = start(Peer {
            offers_stream: true,
            answers_per_stream: Some(2),
            ..Default::default()
        })
        .await;
        out.forward(batch(1)).await.unwrap();
        out.forward(batch(1)).await.unwrap();
        let e = out.forward(batch(1)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        let r = out.forward(batch(1)).await.unwrap();
        assert_eq!(nth(&r), "2", "the third batch the peer answered");
        assert_eq!(peer.streams.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_batch_not_answered_in_time_fails_and_frees_the_lane() {
        let (peer, mut out) = start(Peer {
            offers_stream: true,
            silent: true,
            ..Default::default()
        })
        .await;
        let started = std::time::Instant::now();
        let e = out.forward(batch(1)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(out.stream.is_none(), "the stream is given up");
        assert_eq!(
            peer.streamed.load(Ordering::SeqCst),
            1,
            "the batch went with the stream's opening, though nothing came back"
        );
        out.forward(batch(1)).await.unwrap_err();
        assert_eq!(peer.streamed.load(Ordering::SeqCst), 2, "and again");
    }
}
