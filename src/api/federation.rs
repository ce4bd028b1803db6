//! The `Federation` service (node to node).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::{auth, status::to_status};
use crate::node::{Core, checkpoint, receive};
use crate::pb;

pub struct FederationService {
    pub core: Arc<Core>,
}

#[tonic::async_trait]
impl pb::federation_server::Federation for FederationService {
    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let (sender, _permit) = auth::node(&self.core, &request).await?;
        receive::forward(&self.core, &sender, request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn push_status(
        &self,
        request: Request<pb::PushStatusRequest>,
    ) -> Result<Response<pb::PushStatusResponse>, Status> {
        let (sender, _permit) = auth::node(&self.core, &request).await?;
        receive::push_status(&self.core, &sender, request.get_ref())
            .await
            .map(Response::new)
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
        }))
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
        let _permit = auth::node(&self.core, &request).await?;
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
