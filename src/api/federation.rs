//! The `Federation` service (node to node).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::{auth, convert, status::to_status};
use crate::node::{Core, checkpoint, membership, receive};
use crate::pb;

pub struct FederationService {
    pub core: Arc<Core>,
    /// Ends open `ForwardStream`s when the node shuts down (a graceful
    /// shutdown waits for every stream in flight to end).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Consistency proofs per peer: ten at once, then one every ten seconds.
const PROOFS: crate::config::Quota = crate::config::Quota {
    per_sec: 0.1,
    burst: 10.0,
    concurrent: 2,
};

/// How long a `ForwardStream` may wait for its next batch, or for the
/// sender to take an answer, before the receiver ends it.
const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Resolves when the node is shutting down.
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        // No one can ask any more: the server stops with the node.
        std::future::pending::<()>().await;
    }
}

impl FederationService {
    /// The protocol this node speaks on the wire, or `None` when it is set
    /// to behave as the previous release (protocol 1, which said nothing).
    fn protocol(&self) -> Option<u32> {
        (self.core.config.exchange.protocol >= 2).then_some(membership::PROTOCOL)
    }
}

#[tonic::async_trait]
impl pb::federation_server::Federation for FederationService {
    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let (sender, _permit) = auth::node(&self.core, &request).await?;
        self.core
            .metrics
            .batches_unary
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        receive::forward(&self.core, &sender, request.into_inner())
            .await
            .map(|answers| Response::new(convert::forward_response(answers)))
            .map_err(to_status)
    }

    type ForwardStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ForwardResponse, Status>> + Send + 'static>,
    >;

    async fn forward_stream(
        &self,
        request: Request<tonic::Streaming<pb::ForwardRequest>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        let sender = auth::node_stream(&self.core, &request).await?;
        let connection = request
            .extensions()
            .get::<crate::api::auth::ConnInfo>()
            .and_then(|i| i.remote);
        let mut inbound = request.into_inner();
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(1);
        let core = self.core.clone();
        let mut shutdown = self.shutdown.clone();
        // One batch at a time, answered in order: the sender runs one
        // stream per bulk lane, so its lanes still overlap.
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    // Shutting down: the stream ends between batches (the
                    // sender opens a new one to wherever it goes next).
                    _ = stopping(&mut shutdown) => break,
                    // A sender closes its stream when it has nothing to
                    // send: one left idle this long is ended here.
                    _ = tokio::time::sleep(STREAM_IDLE) => break,
                };
                let batch = match next {
                    Ok(Some(batch)) => batch,
                    // The sender closed the stream.
                    Ok(None) => break,
                    // A batch that does not decode, or is over the size
                    // limit: refused and audited as the same call would be
                    // (`api::rescue`); anything else is the stream breaking.
                    Err(status) => {
                        if let Some((code, reason_code, text)) =
                            crate::api::rescue::rescued(status.code(), status.message())
                        {
                            let detail = format!("{text} (ForwardStream)");
                            core.audit_refusal_on(
                                connection,
                                &format!("node:{sender}"),
                                reason_code,
                                &detail,
                                &[],
                            )
                            .await;
                            let _ = out_tx.send(Err(Status::new(code, text))).await;
                        }
                        break;
                    }
                };
                // The sender gave up on this stream (its deadline passed):
                // the batch goes again on a new one.
                if out_tx.is_closed() {
                    break;
                }
                let answer = match auth::node_message(&core, &sender).await {
                    Ok(_permit) => {
                        core.metrics
                            .batches_streamed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        receive::forward(&core, &sender, batch)
                            .await
                            .map(convert::forward_response)
                            .map_err(to_status)
                    }
                    Err(refused) => Err(refused),
                };
                let failed = answer.is_err();
                // A sender that stops reading answers does not hold this
                // task (and the node's shutdown) forever.
                let sent = tokio::select! {
                    sent = out_tx.send(answer) => sent.is_ok(),
                    _ = stopping(&mut shutdown) => false,
                    _ = tokio::time::sleep(STREAM_IDLE) => false,
                };
                if !sent || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }

    async fn push_status(
        &self,
        request: Request<pb::PushStatusRequest>,
    ) -> Result<Response<pb::PushStatusResponse>, Status> {
        let (sender, _permit) = auth::node(&self.core, &request).await?;
        receive::push_status(&self.core, &sender, request.into_inner())
            .await
            .map(|answers| Response::new(convert::push_status_response(answers)))
            .map_err(to_status)
    }

    async fn node_info(
        &self,
        request: Request<pb::NodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfoResponse>, Status> {
        let _permit = auth::node(&self.core, &request).await?;
        let directory = self.core.directory();
        let me = directory.node(&self.core.me);
        Ok(Response::new(pb::NodeInfoResponse {
            node_id: self.core.me.to_string(),
            countries: me.map(|n| n.countries.clone()).unwrap_or_default(),
            key_ids: vec![self.core.key().key_id().to_owned()],
            version: env!("CARGO_PKG_VERSION").to_owned(),
            time_unix_ms: Core::now_ms(),
            protocol_version: self.protocol().unwrap_or(0),
            features: match self.protocol() {
                Some(_) => membership::FEATURES
                    .iter()
                    .map(|f| (*f).to_owned())
                    .collect(),
                None => Vec::new(),
            },
            directory_serial: directory.serial(),
        }))
    }

    async fn get_directory(
        &self,
        request: Request<pb::GetDirectoryRequest>,
    ) -> Result<Response<pb::SignedDirectory>, Status> {
        if self.protocol().is_none() {
            // What a node of the previous release answers.
            return Err(Status::unimplemented(
                "unknown method GetDirectory for service alertrelay.v1.Federation",
            ));
        }
        let (peer, _permit) = auth::node(&self.core, &request).await?;
        let known = request.get_ref().known_serial;
        let directory = self.core.directory();
        let ours = directory.serial();
        if known > ours && directory.signed.is_some() {
            // The caller has a newer one: ask it (and every peer) now.
            tracing::debug!(%peer, known, ours, "a peer has a newer directory");
            self.core.membership.wake.notify_one();
        }
        let answer = match &directory.signed {
            Some(info) if ours > known => convert::signed_directory_to_pb(&info.document),
            _ => pb::SignedDirectory::default(),
        };
        Ok(Response::new(answer))
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::CheckpointNote>, Status> {
        let _permit = auth::node(&self.core, &request).await?;
        let note = checkpoint::latest_with_cosignatures(&self.core)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CheckpointNote {
            note: note.unwrap_or_default(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        let (peer, _permit) = auth::node(&self.core, &request).await?;
        // A proof reads up to the whole log: a few at a time per peer (a
        // witness asks once per exchange).
        let _proof = self
            .core
            .limiter
            .admit(&format!("consistency proof {peer}"), PROOFS)
            .map_err(crate::api::status::overloaded)?;
        let r = request.get_ref();
        let proof = checkpoint::consistency_proof(&self.core, r.old_size, r.new_size)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ConsistencyProof {
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn cosign(
        &self,
        request: Request<pb::CosignRequest>,
    ) -> Result<Response<pb::CosignResponse>, Status> {
        let (witness, _permit) = auth::node(&self.core, &request).await?;
        let r = request.get_ref();
        checkpoint::receive_cosignature(
            &self.core,
            &witness,
            &r.checkpoint,
            &r.cosignature,
            &r.refusal,
        )
        .await
        .map_err(to_status)?;
        Ok(Response::new(pb::CosignResponse {}))
    }

    async fn get_witnessed(
        &self,
        request: Request<pb::GetWitnessedRequest>,
    ) -> Result<Response<pb::CheckpointNote>, Status> {
        let _permit = auth::node(&self.core, &request).await?;
        let row = self
            .core
            .store
            .witnessed(&request.get_ref().log)
            .await
            .map_err(|e| to_status(e.into()))?;
        Ok(Response::new(pb::CheckpointNote {
            // Their note with our cosignature appended.
            note: row.map(|w| w.note + &w.cosignature).unwrap_or_default(),
        }))
    }
}
